//! `iomt-edge medtech preview|check`: what the Azure MedTech service would make
//! of messages, locally (see docs/medtech.md).

use super::out::{errln, out, outln};
use super::{EXIT_PROBLEMS, EXIT_USAGE};
use crate::medtech::{check, IdentityMode, MedTech, Preview, PreviewOptions, Skip, SkipKind};
use serde_json::{Map, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Print the measurements, Observations, skipped data, warnings and readings
    /// excluded by device status for messages, as JSON. Exit 3 when something
    /// would be dropped or stored differently from what was sent, or a reading
    /// the device marked not valid would be charted.
    Preview(PreviewArgs),
    /// Validate the mappings and report per template what sample messages produce.
    /// Exit 3 when the mappings are invalid, data would be dropped or stored
    /// differently from what was sent, or a reading the device marked not valid
    /// would be charted.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct Mappings {
    /// Device mapping (devicecontent.json). Default: the shipped devices/medtech mapping.
    #[arg(long, value_name = "FILE")]
    device_mapping: Option<PathBuf>,
    /// FHIR destination mapping (fhirmapping.json). Default: the shipped mapping.
    #[arg(long, value_name = "FILE")]
    fhir_mapping: Option<PathBuf>,
    /// How the service resolves Patient and Device ids.
    #[arg(long, value_enum, default_value_t = IdentityMode::Create)]
    identity: IdentityMode,
    /// An application property of every event ($.Properties), e.g. iothub-creation-time-utc=2026-01-01T00:00:00Z.
    #[arg(long = "property", value_name = "K=V")]
    properties: Vec<String>,
    /// A system property of every event ($.SystemProperties), e.g. iothub-connection-device-id=gw-1.
    #[arg(long = "system-property", value_name = "K=V")]
    system_properties: Vec<String>,
    /// Inputs are whole events {"Body", "Properties", "SystemProperties"}, not message bodies.
    #[arg(long)]
    envelope: bool,
    /// DefaultDeviceIdentifierSystem of the service, if set there.
    #[arg(long, value_name = "URI")]
    device_identifier_system: Option<String>,
}

#[derive(clap::Args)]
struct PreviewArgs {
    #[command(flatten)]
    mappings: Mappings,
    /// Preview what is queued in this outbox directory (read-only use; stop the gateway first).
    #[arg(long, value_name = "DIR")]
    outbox: Option<PathBuf>,
    /// At most this many readings from the outbox.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// Print a one-line summary per Observation instead of JSON.
    #[arg(long)]
    summary: bool,
    /// Files with a JSON message, a JSON array of messages, or NDJSON; `-` for stdin.
    inputs: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    mappings: Mappings,
    /// Sample messages (as for preview). Default: one generated message per reading type.
    inputs: Vec<PathBuf>,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.command {
        Sub::Preview(p) => preview(p),
        Sub::Check(c) => check_cmd(c),
    }
}

fn read_text(path: &Path) -> std::io::Result<String> {
    let s = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path)?
    };
    Ok(s.trim_start_matches('\u{feff}').to_string())
}

fn kv(list: &[String], flag: &str) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    for item in list {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("--{flag} {item:?}: expected KEY=VALUE"))?;
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

/// What loading the mappings gave: the engine, or the exit code to stop with.
// Built once per command run, so the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Load {
    Ok(MedTech, PreviewOptions),
    Exit(ExitCode),
}

fn load(m: &Mappings) -> Load {
    let read = |p: &Option<PathBuf>, shipped: &'static str| -> Result<String, String> {
        match p {
            None => Ok(shipped.to_string()),
            Some(p) => read_text(p).map_err(|e| format!("cannot read {}: {e}", p.display())),
        }
    };
    let (dev, fhir) =
        match (read(&m.device_mapping, crate::medtech::SHIPPED_DEVICE_MAPPING), read(&m.fhir_mapping, crate::medtech::SHIPPED_FHIR_MAPPING)) {
            (Ok(d), Ok(f)) => (d, f),
            (Err(e), _) | (_, Err(e)) => {
                errln!("error: {e}");
                return Load::Exit(ExitCode::from(EXIT_USAGE));
            }
        };
    let name = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "shipped mapping".into());
    let device = match crate::medtech::DeviceMapping::parse(&dev) {
        Ok(d) => d,
        Err(e) => {
            errln!("device mapping {} is invalid (MedTech would not load it): {e}", name(&m.device_mapping));
            return Load::Exit(ExitCode::from(EXIT_PROBLEMS));
        }
    };
    let fhir = match crate::medtech::FhirMapping::parse(&fhir) {
        Ok(f) => f,
        Err(e) => {
            errln!("FHIR mapping {} is invalid (MedTech would not load it): {e}", name(&m.fhir_mapping));
            return Load::Exit(ExitCode::from(EXIT_PROBLEMS));
        }
    };
    let (properties, system_properties) = match (kv(&m.properties, "property"), kv(&m.system_properties, "system-property")) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(e), _) | (_, Err(e)) => {
            errln!("error: {e}");
            return Load::Exit(ExitCode::from(EXIT_USAGE));
        }
    };
    let opts = PreviewOptions {
        identity: m.identity,
        properties,
        system_properties,
        inputs_are_envelopes: m.envelope,
        device_identifier_system: m.device_identifier_system.clone(),
        ..Default::default()
    };
    Load::Ok(MedTech { device, fhir }, opts)
}

/// Parses input text: one JSON value (an array means several messages), else NDJSON.
/// Lines that are not JSON are returned as errors with their line number.
pub(crate) fn parse_messages(text: &str) -> (Vec<Value>, Vec<String>) {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => return (a, Vec::new()),
        Ok(v) => return (vec![v], Vec::new()),
        Err(_) => {}
    }
    let mut msgs = Vec::new();
    let mut errs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => msgs.push(v),
            Err(e) => errs.push(format!("line {}: {e}", i + 1)),
        }
    }
    if msgs.is_empty() && errs.len() > 1 {
        // Not NDJSON either: report the file once.
        if let Err(e) = serde_json::from_str::<Value>(text) {
            return (Vec::new(), vec![format!("not JSON: {e}")]);
        }
    }
    (msgs, errs)
}

fn read_inputs(inputs: &[PathBuf]) -> Result<(Vec<Value>, Vec<Skip>), ExitCode> {
    let mut msgs = Vec::new();
    let mut skipped = Vec::new();
    for p in inputs {
        let text = match read_text(p) {
            Ok(t) => t,
            Err(e) => {
                errln!("error: cannot read {}: {e}", p.display());
                return Err(ExitCode::from(EXIT_USAGE));
            }
        };
        let (m, errs) = parse_messages(&text);
        msgs.extend(m);
        for e in errs {
            skipped.push(Skip {
                kind: SkipKind::NotJson,
                input: None,
                template: None,
                type_name: None,
                count: 1,
                reason: format!(
                    "{}: {e}; MedTech fails an event whose body its Json.NET reader refuses (InvalidDataFormatException). Json.NET is more lenient than \
                     strict JSON (comments, trailing commas, single quotes, NaN, text after the first value ignored), which the preview does not model",
                    p.display()
                ),
            });
        }
    }
    Ok((msgs, skipped))
}

/// Reads queued readings and groups consecutive ones of the same device and
/// patient into messages, as the forwarder batches them.
/// Opens the outbox for inspection only: a path that holds no outbox (a typo)
/// fails with exit 2 and creates nothing; a damaged one fails with exit 3.
fn outbox_messages(dir: &Path, limit: usize) -> Result<Vec<Value>, ExitCode> {
    let fail = |what: &str, e: crate::outbox::OutboxError| {
        // Name the outbox, not the private copy it is read from.
        let e = if e.is_damage() { crate::outbox::OutboxError::Damaged(dir.to_path_buf()) } else { e };
        super::out::errln!("error: cannot {what} outbox {}: {e}", dir.display());
        ExitCode::from(super::outbox::inspect_exit_code(&e))
    };
    let (outbox, _report) = crate::outbox::Outbox::inspect(dir, &crate::config::OutboxConfig::default()).map_err(|e| fail("open", e))?;
    let readings = outbox.read_range(0, u64::MAX, limit).map_err(|e| fail("read", e))?;
    let mut out = Vec::new();
    let mut batch: Vec<crate::model::Reading> = Vec::new();
    let flush = |batch: &mut Vec<crate::model::Reading>, out: &mut Vec<Value>| {
        if let Some(m) = crate::model::Message::from_batch("preview", outbox.epoch(), batch) {
            out.push(serde_json::to_value(&m).unwrap_or(Value::Null));
        }
        batch.clear();
    };
    for r in readings {
        if let Some(last) = batch.last() {
            if last.device_id != r.device_id || last.patient_id != r.patient_id || batch.len() >= 100 {
                flush(&mut batch, &mut out);
            }
        }
        batch.push(r);
    }
    flush(&mut batch, &mut out);
    Ok(out)
}

fn preview(a: PreviewArgs) -> anyhow::Result<ExitCode> {
    let (engine, opts) = match load(&a.mappings) {
        Load::Ok(e, o) => (e, o),
        Load::Exit(c) => return Ok(c),
    };
    if a.inputs.is_empty() && a.outbox.is_none() {
        errln!("error: give at least one INPUT (a file, or - for stdin) or --outbox DIR");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let (mut msgs, bad) = match read_inputs(&a.inputs) {
        Ok(x) => x,
        Err(c) => return Ok(c),
    };
    if let Some(dir) = &a.outbox {
        match outbox_messages(dir, a.limit) {
            Ok(m) => msgs.extend(m),
            Err(code) => return Ok(code),
        }
    }
    let mut p: Preview = engine.preview(&msgs, &opts);
    p.skipped.splice(0..0, bad);
    if a.summary {
        for line in crate::medtech::summary_lines(&p) {
            outln!("{line}")?;
        }
    } else {
        outln!("{}", serde_json::to_string_pretty(&p)?)?;
    }
    Ok(if p.has_problems() { ExitCode::from(EXIT_PROBLEMS) } else { ExitCode::SUCCESS })
}

fn check_cmd(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let (engine, opts) = match load(&a.mappings) {
        Load::Ok(e, o) => (e, o),
        Load::Exit(c) => return Ok(c),
    };
    let (msgs, bad, described) = if a.inputs.is_empty() {
        let mut d = "generated: one per reading type the gateway emits, spot-checks, readings whose SampledData slot is taken, \
                     one flagged unavailable and one flagged without sensor contact"
            .to_string();
        for (t, why) in crate::medtech::UNMAPPED_READING_TYPES {
            d.push_str(&format!("; {t} not generated: deliberately unmapped ({why})"));
        }
        (check::sample_messages(), Vec::new(), d)
    } else {
        match read_inputs(&a.inputs) {
            Ok((m, b)) => (m, b, "from the given files".to_string()),
            Err(c) => return Ok(c),
        }
    };
    let report = check::check(&engine, &msgs, &opts, &described, bad);
    out!("{}", report.text)?;
    Ok(if report.data_lost || report.invalid_charted { ExitCode::from(EXIT_PROBLEMS) } else { ExitCode::SUCCESS })
}
