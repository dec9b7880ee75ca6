//! Template expressions (JSONPath or JMESPath) and how their results turn into
//! the strings and times MedTech stores.
//!
//! JMESPath runs on the `jmespath` crate with MedTech's custom functions
//! registered (`add`, `divide`, `multiply`, `pow`, `subtract`, `insertString`,
//! `fromUnixTimestamp`, `fromUnixTimestampMs`), written to do what the C# in
//! iomt-fhir `src/lib/Microsoft.Health.Expressions/*Function.cs` does per
//! Json.NET token type (integer vs float arithmetic, integer division,
//! wrap-around, Date results), not what `docs/CustomFunctions.md` suggests.

use super::dotnet;
use super::jsonpath::JsonPath;
use super::skip::WarningKind;
use chrono::{DateTime, Utc};
use jmespath::functions::{ArgumentType, CustomFunction, Signature};
use jmespath::{Context, ErrorReason, JmespathError, Rcvar, Runtime, Variable};
use serde_json::Value;
use std::sync::LazyLock;

/// Which language an expression is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Language {
    JsonPath,
    JmesPath,
}

impl Language {
    /// Parses `"JsonPath"` / `"JmesPath"` case-insensitively.
    pub(crate) fn from_name(s: &str) -> Option<Language> {
        match s.to_ascii_lowercase().as_str() {
            "jsonpath" => Some(Language::JsonPath),
            "jmespath" => Some(Language::JmesPath),
            _ => None,
        }
    }
}

/// A compiled expression.
#[derive(Clone)]
pub(crate) enum Expression {
    JsonPath(JsonPath),
    JmesPath(Box<jmespath::Expression<'static>>),
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expression::JsonPath(p) => write!(f, "JsonPath({})", p.as_str()),
            Expression::JmesPath(e) => write!(f, "JmesPath({})", e.as_str()),
        }
    }
}

/// Why an expression could not be evaluated (MedTech: TemplateExpressionException).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EvalError {
    /// `SelectToken` matched more than one token.
    SeveralTokens(usize),
    /// A JMESPath runtime error (wrong argument type, divide by zero...).
    JmesPath(String),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::SeveralTokens(n) => write!(f, "the expression matched {n} tokens where exactly one is allowed"),
            EvalError::JmesPath(e) => write!(f, "JMESPath error: {e}"),
        }
    }
}

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    let mut rt = Runtime::new();
    rt.register_builtin_functions();
    register_custom_functions(&mut rt);
    rt
});

thread_local! {
    /// Silent coercions seen by the custom functions during the current
    /// evaluation on this thread; drained with [`take_notes`].
    static NOTES: std::cell::RefCell<Vec<(WarningKind, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn note(kind: WarningKind, text: String) {
    NOTES.with(|n| n.borrow_mut().push((kind, text)));
}

/// The silent coercions the custom JMESPath functions made since the last
/// call (integer division, wrapped integers, non-finite results).
pub(crate) fn take_notes() -> Vec<(WarningKind, String)> {
    NOTES.with(|n| std::mem::take(&mut *n.borrow_mut()))
}

fn fail(ctx: &Context<'_>, msg: &str) -> JmespathError {
    JmespathError::new(ctx.expression, ctx.offset, ErrorReason::Parse(msg.to_string()))
}

/// A JMESPath number as Json.NET types it: `Integer` (a long) or `Float` (a double).
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

/// Reads argument `pos` of `name` as the service's functions do: only
/// `JTokenType.Integer` or `Float` pass `ValidatePositionalArgumentIsNumber`;
/// an integer beyond a long is a BigInteger in Json.NET, which `Value<long>()`
/// cannot convert.
fn num_arg(args: &[Rcvar], pos: usize, name: &str, ctx: &Context<'_>) -> Result<Num, JmespathError> {
    let Some(Variable::Number(n)) = args.get(pos).map(|v| &**v) else {
        return Err(fail(ctx, &format!("invalid-type, function {name} expects argument {pos} to be one of the following: Integer|Float")));
    };
    if let Some(i) = n.as_i64() {
        Ok(Num::Int(i))
    } else if n.is_u64() {
        Err(fail(
            ctx,
            &format!("{name}: argument {pos} ({n}) is larger than a long (Json.NET holds it as a BigInteger, which Value<long>() cannot convert)"),
        ))
    } else {
        Ok(Num::Float(n.as_f64().unwrap_or(f64::NAN)))
    }
}

fn as_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    }
}

/// A double result: Json.NET writes a non-finite double as `Infinity`,
/// `-Infinity` or `NaN` text, which a JMESPath number cannot hold, so it is
/// returned as that string (see docs/medtech.md).
fn float_result(name: &str, v: f64) -> Rcvar {
    match serde_json::Number::from_f64(v) {
        Some(n) => Rcvar::new(Variable::Number(n)),
        None => {
            let text = dotnet_double(v);
            note(
                WarningKind::NotFinite,
                format!("{name}() gave {text} (a double that is not a finite number); the service stores the text {text:?}"),
            );
            Rcvar::new(Variable::String(text))
        }
    }
}

fn int_result(v: i64) -> Rcvar {
    Rcvar::new(Variable::Number(serde_json::Number::from(v)))
}

/// add/subtract/multiply/divide as iomt-fhir `AddFunction.cs`,
/// `SubtractFunction.cs`, `MultiplyFunction.cs`, `DivideFunction.cs`: if either
/// argument is a Float, `double` arithmetic (x/0.0 is Infinity, no error);
/// otherwise `long` arithmetic, unchecked (C# default: wraps on overflow),
/// and `long / long` truncates toward zero; an integer divide by zero throws
/// DivideByZeroException and `long.MinValue / -1` throws OverflowException.
/// `long` arithmetic: the result and, for a wrap, a note; or the .NET
/// exception it throws.
type IntOp = fn(i64, i64) -> Result<(i64, Option<String>), &'static str>;

fn arith(rt: &mut Runtime, name: &'static str, float_op: fn(f64, f64) -> f64, int_op: IntOp) {
    rt.register_function(
        name,
        Box::new(CustomFunction::new(
            Signature::new(vec![ArgumentType::Any, ArgumentType::Any], None),
            Box::new(move |args: &[Rcvar], ctx: &mut Context<'_>| {
                let a = num_arg(args, 0, name, ctx)?;
                let b = num_arg(args, 1, name, ctx)?;
                match (a, b) {
                    (Num::Int(x), Num::Int(y)) => {
                        let (r, why) = int_op(x, y).map_err(|e| fail(ctx, &format!("{name}({x}, {y}): {e}")))?;
                        if let Some(why) = why {
                            note(WarningKind::IntegerArithmetic, format!("{name}({x}, {y}) is {r} in the service: {why}"));
                        }
                        Ok(int_result(r))
                    }
                    _ => Ok(float_result(name, float_op(as_f64(a), as_f64(b)))),
                }
            }),
        )),
    );
}

fn wrapped(r: (i64, bool)) -> Result<(i64, Option<String>), &'static str> {
    Ok((r.0, r.1.then(|| "both arguments are integers, so .NET computes in 64-bit longs and the result wrapped around".to_string())))
}

fn int_divide(x: i64, y: i64) -> Result<(i64, Option<String>), &'static str> {
    if y == 0 {
        return Err("DivideByZeroException (both arguments are integers)");
    }
    let r = x.checked_div(y).ok_or("OverflowException (long.MinValue / -1)")?;
    let why = (x % y != 0).then(|| {
        format!(
            "both arguments are integers, so .NET divides 64-bit longs and drops the remainder (the exact quotient is {}); make one argument a float, e.g. `{y}.0`",
            dotnet_double(x as f64 / y as f64)
        )
    });
    Ok((r, why))
}

/// `pow` as iomt-fhir `PowerFunction.cs`: doubles if either is a Float, else
/// `Convert.ToInt64(Math.Pow(a, b))`, which rounds half to even and throws
/// OverflowException outside the long range (and for NaN).
fn int_pow(x: i64, y: i64) -> Result<(i64, Option<String>), &'static str> {
    let p = (x as f64).powf(y as f64);
    if p.is_nan() || !(-9_223_372_036_854_775_808.5..9_223_372_036_854_775_807.5).contains(&p) {
        return Err("OverflowException (Convert.ToInt64 of the result)");
    }
    let r = p.round_ties_even() as i64;
    Ok((r, (r as f64 != p).then(|| format!("both arguments are integers, so the result {} is rounded to a long", dotnet_double(p)))))
}

/// `fromUnixTimestamp` / `fromUnixTimestampMs` as iomt-fhir
/// `FromUnixTimestampFunction.cs` / `FromUnixTimestampFunctionMilliseconds.cs`:
/// the argument must be a JSON integer (a float such as `1625677200.5` fails
/// validation), `DateTimeOffset.FromUnixTimeSeconds`/`Milliseconds` throws
/// outside years 0001..9999, and the result is a Date token in UTC. It is
/// returned here as `yyyy-MM-ddTHH:mm:ss.fffffffZ`, the one string form that
/// [`token_time`] and [`token_string`] treat exactly as the service treats a
/// Date token (a time; as a value, `MM/dd/yyyy HH:mm:ss`).
fn from_unix(rt: &mut Runtime, name: &'static str, per_second: i64) {
    rt.register_function(
        name,
        Box::new(CustomFunction::new(
            Signature::new(vec![ArgumentType::Any], None),
            Box::new(move |args: &[Rcvar], ctx: &mut Context<'_>| {
                let n = match num_arg(args, 0, name, ctx) {
                    Ok(Num::Int(i)) => i,
                    _ => return Err(fail(ctx, &format!("invalid-type, function {name} expects argument 0 to be one of the following: Integer"))),
                };
                let (lo, hi) = (-62_135_596_800 * per_second, 253_402_300_799 * per_second + (per_second - 1));
                if n < lo || n > hi {
                    return Err(fail(ctx, &format!("{name}({n}): ArgumentOutOfRangeException (outside years 0001..9999)")));
                }
                let ms = n.saturating_mul(1000 / per_second);
                let t = DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| fail(ctx, "timestamp out of range"))?;
                Ok(Rcvar::new(Variable::String(format!("{}.{:07}Z", t.format("%Y-%m-%dT%H:%M:%S"), t.timestamp_subsec_nanos() / 100))))
            }),
        )),
    );
}

fn register_custom_functions(rt: &mut Runtime) {
    arith(rt, "add", |a, b| a + b, |a, b| wrapped(a.overflowing_add(b)));
    arith(rt, "subtract", |a, b| a - b, |a, b| wrapped(a.overflowing_sub(b)));
    arith(rt, "multiply", |a, b| a * b, |a, b| wrapped(a.overflowing_mul(b)));
    arith(rt, "divide", |a, b| a / b, int_divide);
    arith(rt, "pow", f64::powf, int_pow);
    from_unix(rt, "fromUnixTimestamp", 1);
    from_unix(rt, "fromUnixTimestampMs", 1000);
    // iomt-fhir InsertStringFunction.cs: String, String, Integer; StringBuilder.Insert
    // at a UTF-16 index, ArgumentOutOfRangeException outside 0..=length.
    rt.register_function(
        "insertString",
        Box::new(CustomFunction::new(
            Signature::new(vec![ArgumentType::Any, ArgumentType::Any, ArgumentType::Any], None),
            Box::new(|args: &[Rcvar], ctx: &mut Context<'_>| {
                let string_arg = |pos: usize| -> Result<String, JmespathError> {
                    match args.get(pos).map(|v| &**v) {
                        // A body string in Json.NET's date shape is a Date token in the service, not a String.
                        Some(Variable::String(s)) if dotnet::json_net_date(s).is_none() => Ok(s.clone()),
                        Some(Variable::String(_)) => Err(fail(ctx, &format!(
                            "invalid-type, function insertString expects argument {pos} to be one of the following: String (Json.NET read this date-like string as a Date)"
                        ))),
                        _ => Err(fail(ctx, &format!("invalid-type, function insertString expects argument {pos} to be one of the following: String"))),
                    }
                };
                let orig = string_arg(0)?;
                let ins = string_arg(1)?;
                let pos = match num_arg(args, 2, "insertString", ctx) {
                    Ok(Num::Int(i)) => i,
                    _ => return Err(fail(ctx, "invalid-type, function insertString expects argument 2 to be one of the following: Integer")),
                };
                let pos = i32::try_from(pos).map_err(|_| fail(ctx, "insertString: OverflowException (position is not an int)"))?;
                let units: Vec<u16> = orig.encode_utf16().collect();
                if pos < 0 || pos as usize > units.len() {
                    return Err(fail(ctx, "insertString: ArgumentOutOfRangeException (position outside the string)"));
                }
                let p = pos as usize;
                let mut out: Vec<u16> = units[..p].to_vec();
                out.extend(ins.encode_utf16());
                out.extend_from_slice(&units[p..]);
                let s = String::from_utf16(&out).map_err(|_| fail(ctx, "insertString: position splits a surrogate pair"))?;
                Ok(Rcvar::new(Variable::String(s)))
            }),
        )),
    );
}

impl Expression {
    /// Compiles `text` in `language`.
    pub(crate) fn compile(text: &str, language: Language) -> Result<Expression, String> {
        match language {
            Language::JsonPath => JsonPath::parse(text).map(Expression::JsonPath).map_err(|e| e.to_string()),
            Language::JmesPath => {
                RUNTIME.compile(text).map(|e| Expression::JmesPath(Box::new(e))).map_err(|e| format!("invalid JMESPath {text:?}: {e}"))
            }
        }
    }

    /// The expression text.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Expression::JsonPath(p) => p.as_str(),
            Expression::JmesPath(e) => e.as_str(),
        }
    }

    /// `SelectTokens`: each match becomes one measurement. A JMESPath array
    /// result yields its elements; `null` yields nothing. Several expressions
    /// run over the same `data` (every template's type match runs on the same
    /// event): the JMESPath form of `data` is built once, in `jmes_data`, and
    /// reused.
    pub(crate) fn select_tokens_cached(&self, data: &Value, jmes_data: &mut Option<Rcvar>) -> Result<Vec<Value>, EvalError> {
        match self {
            Expression::JsonPath(p) => Ok(p.select_tokens(data).into_iter().cloned().collect()),
            Expression::JmesPath(e) => {
                let var = match jmes_data {
                    Some(v) => v.clone(),
                    None => {
                        let v = Rcvar::new(Variable::from_serializable(data).map_err(|e| EvalError::JmesPath(e.to_string()))?);
                        *jmes_data = Some(v.clone());
                        v
                    }
                };
                let mut ctx = Context::new(e.as_str(), &RUNTIME);
                let r = jmespath::interpret(&var, e.as_ast(), &mut ctx).map_err(|e| EvalError::JmesPath(e.to_string()))?;
                match serde_json::to_value(&*r).map_err(|e| EvalError::JmesPath(e.to_string()))? {
                    Value::Null => Ok(Vec::new()),
                    Value::Array(a) => Ok(a),
                    v => Ok(vec![v]),
                }
            }
        }
    }

    /// `SelectToken`: one token or none; several is an error.
    pub(crate) fn select_token(&self, data: &Value) -> Result<Option<Value>, EvalError> {
        match self {
            Expression::JsonPath(p) => p.select_token(data).map(|o| o.cloned()).map_err(|e| EvalError::SeveralTokens(e.0)),
            Expression::JmesPath(_) => match self.jmes(data)? {
                Value::Null => Ok(None),
                v => Ok(Some(v)),
            },
        }
    }

    fn jmes(&self, data: &Value) -> Result<Value, EvalError> {
        let Expression::JmesPath(e) = self else { return Ok(Value::Null) };
        let r = e.search(data).map_err(|e| EvalError::JmesPath(e.to_string()))?;
        serde_json::to_value(&*r).map_err(|e| EvalError::JmesPath(e.to_string()))
    }
}

/// What a token turns into when MedTech reads it as a string (`Value<string>()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenString {
    /// A usable string.
    Text(String),
    /// null, or a blank string: treated as missing.
    Missing,
    /// An object or array: Json.NET cannot cast it to a string.
    NotAValue(&'static str),
}

/// Json.NET's string form of a token: strings as-is, integers in decimal,
/// doubles in .NET "R" form (`72.0` -> `72`, `1e21` -> `1E+21`), booleans as
/// `True`/`False`. A string in Json.NET's date shape ([`dotnet::json_net_date`])
/// was a Date token in the service and comes out as `MM/dd/yyyy HH:mm:ss`;
/// [`token_string_rewritten`] says when that happened.
#[cfg(test)]
pub(crate) fn token_string(v: &Value) -> TokenString {
    token_string_rewritten(v).0
}

/// [`token_string`] plus the original text when Json.NET would have rewritten a
/// date-like string.
pub(crate) fn token_string_rewritten(v: &Value) -> (TokenString, Option<String>) {
    let mut rewritten = None;
    let s = match v {
        Value::Null => return (TokenString::Missing, None),
        Value::Object(_) => return (TokenString::NotAValue("an object"), None),
        Value::Array(_) => return (TokenString::NotAValue("an array"), None),
        Value::String(s) => match dotnet::json_net_date(s) {
            Some(d) => {
                rewritten = Some(s.clone());
                dotnet::invariant_general(&d.utc)
            }
            None => s.clone(),
        },
        Value::Bool(b) => (if *b { "True" } else { "False" }).to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                dotnet_double(n.as_f64().unwrap_or(0.0))
            } else {
                n.to_string()
            }
        }
    };
    if s.trim().is_empty() {
        (TokenString::Missing, None)
    } else {
        (TokenString::Text(s), rewritten)
    }
}

/// .NET Core 3.0+ `double.ToString(CultureInfo.InvariantCulture)`: shortest
/// round-trip digits, `E+XX`/`E-XX` outside 1e-5..1e15, `-0` for negative
/// zero, `Infinity`/`-Infinity`/`NaN` for non-finite values.
pub(crate) fn dotnet_double(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let sci = format!("{f:e}"); // e.g. "1.5e-7"
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..15).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}E{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// Why a token is not a usable time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimeError {
    Missing,
    NotATime(String),
}

/// A time as the service reads it, with what it read differently from how it
/// is written ([`dotnet::TimeNote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimeRead {
    pub(crate) time: DateTime<Utc>,
    pub(crate) notes: Vec<dotnet::TimeNote>,
}

/// Reads a token as MedTech's `Value<DateTime?>()`:
/// * a string in Json.NET's date shape was a Date token ([`dotnet::json_net_date`]);
/// * any other string goes through `DateTime.Parse(s, InvariantCulture)`
///   ([`dotnet::date_time_parse`], a subset: forms outside it are reported as
///   not a time, since the preview cannot say what .NET would store);
/// * numbers and booleans throw InvalidCastException (use JMESPath `fromUnixTimestamp`).
///
/// `processing_day` is the date .NET gives a time of day without a date.
/// Times are truncated to .NET ticks by the caller.
pub(crate) fn token_time(v: &Value, processing_day: chrono::NaiveDate) -> Result<TimeRead, TimeError> {
    match v {
        Value::Null => Err(TimeError::Missing),
        Value::String(s) if s.trim().is_empty() => Err(TimeError::Missing),
        Value::String(s) => {
            if let Some(d) = dotnet::json_net_date(s) {
                let notes = if d.has_offset { Vec::new() } else { vec![dotnet::TimeNote::NoOffset] };
                return Ok(TimeRead { time: d.utc, notes });
            }
            match dotnet::date_time_parse(s, processing_day) {
                Some((d, notes)) => Ok(TimeRead { time: d.utc, notes }),
                None => Err(TimeError::NotATime(format!(
                    "{s:?} is not a date and time the preview can read; the service's DateTime.Parse (invariant culture) refuses many such strings \
                     and reads others (month names, RFC 1123) in ways the preview does not predict: send ISO 8601 with Z or an offset"
                ))),
            }
        }
        Value::Number(n) => Err(TimeError::NotATime(format!(
            "{n} is a number; MedTech cannot read epoch numbers as times (InvalidCastException; convert with the JMESPath function fromUnixTimestamp or fromUnixTimestampMs)"
        ))),
        other => Err(TimeError::NotATime(format!("{} is not a date and time (InvalidCastException)", kind_of(other)))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::Bool(_) => "a boolean",
        _ => "a value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_as_json_net_writes_them() {
        assert_eq!(token_string(&json!(72.0)), TokenString::Text("72".into()));
        assert_eq!(token_string(&json!(96)), TokenString::Text("96".into()));
        assert_eq!(token_string(&json!(1.1399999856948853)), TokenString::Text("1.1399999856948853".into()));
        assert_eq!(token_string(&json!(1e21)), TokenString::Text("1E+21".into()));
        assert_eq!(token_string(&json!(0.00001)), TokenString::Text("1E-05".into()));
        assert_eq!(token_string(&json!(true)), TokenString::Text("True".into()));
        assert_eq!(token_string(&json!("  ")), TokenString::Missing);
        assert_eq!(token_string(&json!(null)), TokenString::Missing);
        assert!(matches!(token_string(&json!({})), TokenString::NotAValue(_)));
    }

    #[test]
    fn times_in_the_shapes_medtech_sees() {
        use chrono::TimeZone;
        let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 15).unwrap();
        let tt = |v: Value| token_time(&v, day).map(|r| r.time);
        let want = Utc.with_ymd_and_hms(2020, 10, 22, 1, 34, 56).unwrap();
        assert_eq!(tt(json!("2020-10-22T01:34:56+00:00")), Ok(want));
        assert_eq!(tt(json!("2020-10-22T03:34:56+02:00")), Ok(want));
        assert_eq!(tt(json!("2020-10-22T01:34:56+0")), Ok(want));
        assert_eq!(tt(json!("2020-10-22T01:34:56")), Ok(want));
        assert_eq!(token_time(&json!("2020-10-22T01:34:56"), day).unwrap().notes, vec![dotnet::TimeNote::NoOffset]);
        let t = tt(json!("2019-02-01T22:46:01.8750000Z")).unwrap();
        assert_eq!(t.timestamp_subsec_millis(), 875);
        assert!(matches!(tt(json!(1603330496)), Err(TimeError::NotATime(_))));
        assert!(matches!(tt(json!(true)), Err(TimeError::NotATime(_))));
        assert_eq!(tt(json!("")), Err(TimeError::Missing));
        // Json.NET: hour 24 is the next midnight (chrono's RFC 3339 parser refuses it).
        assert_eq!(tt(json!("2020-10-21T24:00:00Z")), Ok(Utc.with_ymd_and_hms(2020, 10, 22, 0, 0, 0).unwrap()));
        // DateTime.Parse: a time with no date lands on the processing day.
        let r = token_time(&json!("10:15:00Z"), day).unwrap();
        assert_eq!(r.time, Utc.with_ymd_and_hms(2026, 1, 15, 10, 15, 0).unwrap());
        assert_eq!(r.notes, vec![dotnet::TimeNote::NoDate]);
        // Forms the preview cannot predict are not called fine.
        assert!(matches!(tt(json!("22 Oct 2020")), Err(TimeError::NotATime(_))));
    }

    #[test]
    fn date_like_strings_come_out_as_json_net_writes_them() {
        assert_eq!(token_string(&json!("2025-03-04T05:06:07Z")), TokenString::Text("03/04/2025 05:06:07".into()));
        assert_eq!(token_string(&json!("2025-03-04T07:06:07.5+02:00")), TokenString::Text("03/04/2025 05:06:07".into()));
        assert_eq!(token_string_rewritten(&json!("2025-03-04T05:06:07Z")).1.as_deref(), Some("2025-03-04T05:06:07Z"));
        // Not Json.NET's date shape: unchanged.
        assert_eq!(token_string(&json!("2025-03-04 05:06:07")), TokenString::Text("2025-03-04 05:06:07".into()));
        assert_eq!(token_string(&json!(-0.0)), TokenString::Text("-0".into()));
    }

    /// Per input type, as the C# functions and their unit tests in
    /// iomt-fhir `test/Microsoft.Health.Expressions.UnitTests/` have it.
    #[test]
    fn jmespath_custom_functions() {
        let data = json!({"a": 40, "b": 50, "f": 2.5, "unix": 1625677200, "ms": 1626799080000u64, "o": "mple",
                          "big": 9223372036854775807i64, "huge": 18446744073709551615u64, "d": "2021-07-07T17:00:00Z", "s": "x"});
        let ev = |e: &str| {
            let _ = take_notes();
            Expression::compile(e, Language::JmesPath).unwrap().select_token(&data)
        };
        // Integers: long arithmetic.
        assert_eq!(ev("add(a, b)"), Ok(Some(json!(90))));
        assert_eq!(ev("subtract(a, b)"), Ok(Some(json!(-10))));
        assert_eq!(ev("multiply(a, b)"), Ok(Some(json!(2000))));
        assert_eq!(ev("divide(`100`, `25`)"), Ok(Some(json!(4))));
        // Integer division truncates (DivideFunction: Value<long>() / Value<long>()), and says so.
        assert_eq!(ev("divide(a, b)"), Ok(Some(json!(0))));
        assert_eq!(take_notes().first().map(|n| n.0), Some(WarningKind::IntegerArithmetic));
        assert_eq!(ev("divide(`-7`, `2`)"), Ok(Some(json!(-3))));
        assert!(matches!(ev("divide(a, `0`)"), Err(EvalError::JmesPath(_))));
        // long overflow wraps (unchecked C#).
        assert_eq!(ev("add(big, `1`)"), Ok(Some(json!(i64::MIN))));
        assert_eq!(take_notes().first().map(|n| n.0), Some(WarningKind::IntegerArithmetic));
        assert!(matches!(ev("add(huge, `1`)"), Err(EvalError::JmesPath(_))));
        // A Float on either side: double arithmetic; results stay floats.
        assert_eq!(ev("divide(a, `50.0`)"), Ok(Some(json!(0.8))));
        assert_eq!(ev("add(f, f)"), Ok(Some(json!(5.0))));
        assert_eq!(ev("divide(add(f, f), `2`)"), Ok(Some(json!(2.5))));
        assert_eq!(ev("divide(f, `0`)"), Ok(Some(json!("Infinity"))));
        assert_eq!(take_notes().first().map(|n| n.0), Some(WarningKind::NotFinite));
        // Strings, arrays, objects are refused.
        assert!(matches!(ev("add(o, a)"), Err(EvalError::JmesPath(_))));
        assert!(matches!(ev("add(`[1]`, a)"), Err(EvalError::JmesPath(_))));
        assert!(matches!(ev("add(`{}`, a)"), Err(EvalError::JmesPath(_))));
        // pow: Convert.ToInt64(Math.Pow) for integers.
        assert_eq!(ev("pow(`100`, `0.5`)"), Ok(Some(json!(10.0))));
        assert_eq!(ev("pow(`2`, `10`)"), Ok(Some(json!(1024))));
        assert_eq!(ev("pow(`2`, `-1`)"), Ok(Some(json!(0))));
        assert!(matches!(ev("pow(a, b)"), Err(EvalError::JmesPath(_))));
        // fromUnixTimestamp(Ms): integers only; a Date token (ISO with Z here).
        assert_eq!(ev("fromUnixTimestamp(unix)"), Ok(Some(json!("2021-07-07T17:00:00.0000000Z"))));
        assert_eq!(ev("fromUnixTimestamp(`-1`)"), Ok(Some(json!("1969-12-31T23:59:59.0000000Z"))));
        assert_eq!(ev("fromUnixTimestampMs(ms)"), Ok(Some(json!("2021-07-20T16:38:00.0000000Z"))));
        assert_eq!(ev("fromUnixTimestampMs(`1500`)"), Ok(Some(json!("1970-01-01T00:00:01.5000000Z"))));
        assert!(matches!(ev("fromUnixTimestamp(`1625677200.5`)"), Err(EvalError::JmesPath(_))));
        assert!(matches!(ev("fromUnixTimestamp(o)"), Err(EvalError::JmesPath(_))));
        assert!(matches!(ev("fromUnixTimestamp(`253402300800`)"), Err(EvalError::JmesPath(_))));
        // As a value, the Date comes out as Json.NET writes a DateTime.
        let v = ev("fromUnixTimestamp(unix)").unwrap().unwrap();
        assert_eq!(token_string(&v), TokenString::Text("07/07/2021 17:00:00".into()));
        // insertString: String, String, Integer; UTF-16 positions 0..=length.
        assert_eq!(ev("insertString(o, 'sa', `0`)"), Ok(Some(json!("sample"))));
        assert_eq!(ev("insertString('myString', '!!', `8`)"), Ok(Some(json!("myString!!"))));
        assert_eq!(ev("insertString('suess', 'cc', `2`)"), Ok(Some(json!("success"))));
        assert_eq!(ev("insertString('\u{1f600}', 'x', `2`)"), Ok(Some(json!("\u{1f600}x"))));
        assert!(matches!(ev("insertString(o, 'sa', `100`)"), Err(EvalError::JmesPath(_))));
        assert!(matches!(ev("insertString(o, 'sa', `-1`)"), Err(EvalError::JmesPath(_))));
        assert!(matches!(ev("insertString(o, 'sa', `1.0`)"), Err(EvalError::JmesPath(_))));
        assert!(matches!(ev("insertString(a, 'sa', `0`)"), Err(EvalError::JmesPath(_))));
        // A date-like body string is a Date token in the service, not a String.
        assert!(matches!(ev("insertString(d, 'x', `0`)"), Err(EvalError::JmesPath(_))));
        assert_eq!(ev("insertString(s, 'x', `0`)"), Ok(Some(json!("xx"))));
        assert!(Expression::compile("add(a,", Language::JmesPath).is_err());
    }
}
