//! Template expressions (JSONPath or JMESPath) and how their results turn into
//! the strings and times MedTech stores.
//!
//! JMESPath runs on the `jmespath` crate with MedTech's custom functions
//! registered (`add`, `divide`, `multiply`, `pow`, `subtract`, `insertString`,
//! `fromUnixTimestamp`, `fromUnixTimestampMs`; iomt-fhir `docs/CustomFunctions.md`).

use super::jsonpath::JsonPath;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use jmespath::functions::{ArgumentType, CustomFunction, Signature};
use jmespath::{Context, ErrorReason, JmespathError, Rcvar, Runtime, Variable};
use serde_json::Value;
use std::sync::LazyLock;

/// Which language an expression is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    JsonPath,
    JmesPath,
}

impl Language {
    /// Parses `"JsonPath"` / `"JmesPath"` case-insensitively.
    pub fn from_name(s: &str) -> Option<Language> {
        match s.to_ascii_lowercase().as_str() {
            "jsonpath" => Some(Language::JsonPath),
            "jmespath" => Some(Language::JmesPath),
            _ => None,
        }
    }
}

/// A compiled expression.
#[derive(Clone)]
pub enum Expression {
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
pub enum EvalError {
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

fn fail(ctx: &Context<'_>, msg: &str) -> JmespathError {
    JmespathError::new(ctx.expression, ctx.offset, ErrorReason::Parse(msg.to_string()))
}

fn number(ctx: &Context<'_>, v: f64) -> Result<Rcvar, JmespathError> {
    // MedTech computes in C# long/double; results must fit a long.
    if !v.is_finite() || v.abs() > i64::MAX as f64 {
        return Err(fail(ctx, "mathematical error: overflow"));
    }
    let n = if v.fract() == 0.0 { serde_json::Number::from(v as i64) } else {
        serde_json::Number::from_f64(v).ok_or_else(|| fail(ctx, "mathematical error"))?
    };
    Ok(Rcvar::new(Variable::Number(n)))
}

fn arith(rt: &mut Runtime, name: &str, op: fn(f64, f64) -> Option<f64>) {
    rt.register_function(
        name,
        Box::new(CustomFunction::new(
            Signature::new(vec![ArgumentType::Number, ArgumentType::Number], None),
            Box::new(move |args: &[Rcvar], ctx: &mut Context<'_>| {
                let a = args.first().and_then(|v| v.as_number()).unwrap_or(0.0);
                let b = args.get(1).and_then(|v| v.as_number()).unwrap_or(0.0);
                match op(a, b) {
                    Some(r) => number(ctx, r),
                    None => Err(fail(ctx, "mathematical error: divide by zero")),
                }
            }),
        )),
    );
}

fn from_unix(rt: &mut Runtime, name: &str, per_second: f64) {
    rt.register_function(
        name,
        Box::new(CustomFunction::new(
            Signature::new(vec![ArgumentType::Number], None),
            Box::new(move |args: &[Rcvar], ctx: &mut Context<'_>| {
                let n = args.first().and_then(|v| v.as_number()).unwrap_or(0.0);
                let ms = (n * 1000.0 / per_second).round();
                let t = DateTime::<Utc>::from_timestamp_millis(ms as i64).ok_or_else(|| fail(ctx, "timestamp out of range"))?;
                // MedTech writes "2021-07-07T17:00:00+0" (DateTimeOffset "yyyy-MM-ddTHH:mm:ssK" style).
                let frac = if t.timestamp_subsec_millis() != 0 { format!(".{:03}", t.timestamp_subsec_millis()) } else { String::new() };
                Ok(Rcvar::new(Variable::String(format!("{}{}+0", t.format("%Y-%m-%dT%H:%M:%S"), frac))))
            }),
        )),
    );
}

fn register_custom_functions(rt: &mut Runtime) {
    arith(rt, "add", |a, b| Some(a + b));
    arith(rt, "subtract", |a, b| Some(a - b));
    arith(rt, "multiply", |a, b| Some(a * b));
    arith(rt, "divide", |a, b| if b == 0.0 { None } else { Some(a / b) });
    arith(rt, "pow", |a, b| Some(a.powf(b)));
    from_unix(rt, "fromUnixTimestamp", 1.0);
    from_unix(rt, "fromUnixTimestampMs", 1000.0);
    rt.register_function(
        "insertString",
        Box::new(CustomFunction::new(
            Signature::new(vec![ArgumentType::String, ArgumentType::String, ArgumentType::Number], None),
            Box::new(|args: &[Rcvar], ctx: &mut Context<'_>| {
                let orig = args.first().and_then(|v| v.as_string().cloned()).unwrap_or_default();
                let ins = args.get(1).and_then(|v| v.as_string().cloned()).unwrap_or_default();
                let pos = args.get(2).and_then(|v| v.as_number()).unwrap_or(-1.0);
                let chars: Vec<char> = orig.chars().collect();
                if pos < 0.0 || pos.fract() != 0.0 || pos as usize > chars.len() {
                    return Err(fail(ctx, "insertString: position out of range"));
                }
                let p = pos as usize;
                let mut out: String = chars.iter().take(p).collect();
                out.push_str(&ins);
                out.extend(chars.iter().skip(p));
                Ok(Rcvar::new(Variable::String(out)))
            }),
        )),
    );
}

impl Expression {
    /// Compiles `text` in `language`.
    pub fn compile(text: &str, language: Language) -> Result<Expression, String> {
        match language {
            Language::JsonPath => JsonPath::parse(text).map(Expression::JsonPath).map_err(|e| e.to_string()),
            Language::JmesPath => {
                RUNTIME.compile(text).map(|e| Expression::JmesPath(Box::new(e))).map_err(|e| format!("invalid JMESPath {text:?}: {e}"))
            }
        }
    }

    /// The expression text.
    pub fn as_str(&self) -> &str {
        match self {
            Expression::JsonPath(p) => p.as_str(),
            Expression::JmesPath(e) => e.as_str(),
        }
    }

    /// `SelectTokens`: each match becomes one measurement. A JMESPath array
    /// result yields its elements; `null` yields nothing.
    pub fn select_tokens(&self, data: &Value) -> Result<Vec<Value>, EvalError> {
        self.select_tokens_cached(data, &mut None)
    }

    /// [`Expression::select_tokens`] for several expressions over the same
    /// `data` (every template's type match runs on the same event): the
    /// JMESPath form of `data` is built once, in `jmes_data`, and reused.
    pub fn select_tokens_cached(&self, data: &Value, jmes_data: &mut Option<Rcvar>) -> Result<Vec<Value>, EvalError> {
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
    pub fn select_token(&self, data: &Value) -> Result<Option<Value>, EvalError> {
        match self {
            Expression::JsonPath(p) => {
                p.select_token(data).map(|o| o.cloned()).map_err(|e| EvalError::SeveralTokens(e.0))
            }
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
pub enum TokenString {
    /// A usable string.
    Text(String),
    /// null, or a blank string: treated as missing.
    Missing,
    /// An object or array: Json.NET cannot cast it to a string.
    NotAValue(&'static str),
}

/// Json.NET's string form of a token: strings as-is, integers in decimal,
/// doubles in .NET "R" form (`72.0` -> `72`, `1e21` -> `1E+21`), booleans as `True`/`False`.
pub fn token_string(v: &Value) -> TokenString {
    let s = match v {
        Value::Null => return TokenString::Missing,
        Value::Object(_) => return TokenString::NotAValue("an object"),
        Value::Array(_) => return TokenString::NotAValue("an array"),
        Value::String(s) => s.clone(),
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
        TokenString::Missing
    } else {
        TokenString::Text(s)
    }
}

/// .NET Core's shortest round-trip `double.ToString()`.
pub fn dotnet_double(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
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
pub enum TimeError {
    Missing,
    NotATime(String),
}

/// Reads a token as MedTech's `Value<DateTime?>()` followed by `ToUniversalTime()`.
///
/// Accepts ISO 8601 with `Z`, `+hh:mm`, `+hhmm`, `+hh` or `+h` offsets (the last is
/// what `fromUnixTimestamp` produces), any number of fraction digits, `T` or a
/// space. A time without an offset is taken as UTC (the service reads it as
/// server-local time, which is UTC on Azure). Numbers are rejected, as in the
/// service (use JMESPath `fromUnixTimestamp`).
pub fn token_time(v: &Value) -> Result<DateTime<Utc>, TimeError> {
    match v {
        Value::Null => Err(TimeError::Missing),
        Value::String(s) if s.trim().is_empty() => Err(TimeError::Missing),
        Value::String(s) => parse_time(s.trim()).ok_or_else(|| TimeError::NotATime(format!("{s:?} is not a date and time"))),
        Value::Number(n) => Err(TimeError::NotATime(format!(
            "{n} is a number; MedTech cannot read epoch numbers as times (convert with the JMESPath function fromUnixTimestamp or fromUnixTimestampMs)"
        ))),
        other => Err(TimeError::NotATime(format!("{} is not a date and time", kind_of(other)))),
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

/// Lenient ISO 8601 parser (see [`token_time`]).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let s = s.replacen(' ', "T", 1);
    // Split off an offset: Z, or +/- after the time part.
    let tpos = s.find('T')?;
    let (head, tail) = s.split_at(tpos);
    let (time_part, offset_secs) = if let Some(stripped) = tail.strip_suffix('Z').or_else(|| tail.strip_suffix('z')) {
        (stripped.to_string(), 0i32)
    } else if let Some(i) = tail.rfind(['+', '-']) {
        let (tp, off) = tail.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let digits: String = off[1..].chars().filter(|c| *c != ':').collect();
        if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let (h, m) = if digits.len() <= 2 { (digits.as_str(), "0") } else { digits.split_at(digits.len() - 2) };
        let secs = h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60;
        (tp.to_string(), sign * secs)
    } else {
        (tail.to_string(), 0)
    };
    let naive_text = format!("{head}{time_part}");
    let naive = NaiveDateTime::parse_from_str(&naive_text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&naive_text, "%Y-%m-%dT%H:%M"))
        .ok()?;
    let off = chrono::FixedOffset::east_opt(offset_secs)?;
    off.from_local_datetime(&naive).single().map(|t| t.with_timezone(&Utc))
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
        let want = Utc.with_ymd_and_hms(2020, 10, 22, 1, 34, 56).unwrap();
        assert_eq!(token_time(&json!("2020-10-22T01:34:56+00:00")), Ok(want));
        assert_eq!(token_time(&json!("2020-10-22T03:34:56+02:00")), Ok(want));
        assert_eq!(token_time(&json!("2020-10-22T01:34:56+0")), Ok(want));
        assert_eq!(token_time(&json!("2020-10-22T01:34:56")), Ok(want));
        let t = token_time(&json!("2019-02-01T22:46:01.8750000Z")).unwrap();
        assert_eq!(t.timestamp_subsec_millis(), 875);
        assert!(matches!(token_time(&json!(1603330496)), Err(TimeError::NotATime(_))));
        assert_eq!(token_time(&json!("")), Err(TimeError::Missing));
    }

    #[test]
    fn jmespath_custom_functions() {
        let data = json!({"a": 40, "b": 50, "unix": 1625677200, "ms": 1626799080000u64, "o": "mple"});
        let ev = |e: &str| Expression::compile(e, Language::JmesPath).unwrap().select_token(&data);
        assert_eq!(ev("add(a, b)"), Ok(Some(json!(90))));
        assert_eq!(ev("subtract(a, b)"), Ok(Some(json!(-10))));
        assert_eq!(ev("multiply(a, b)"), Ok(Some(json!(2000))));
        assert_eq!(ev("divide(a, b)"), Ok(Some(json!(0.8))));
        assert!(matches!(ev("divide(a, `0`)"), Err(EvalError::JmesPath(_))));
        assert_eq!(ev("pow(`100`, `0.5`)"), Ok(Some(json!(10))));
        assert!(matches!(ev("pow(a, b)"), Err(EvalError::JmesPath(_))));
        assert_eq!(ev("fromUnixTimestamp(unix)"), Ok(Some(json!("2021-07-07T17:00:00+0"))));
        assert_eq!(ev("fromUnixTimestampMs(ms)"), Ok(Some(json!("2021-07-20T16:38:00+0"))));
        assert_eq!(ev("insertString(o, 'sa', `0`)"), Ok(Some(json!("sample"))));
        assert!(matches!(ev("insertString(o, 'sa', `100`)"), Err(EvalError::JmesPath(_))));
        assert!(Expression::compile("add(a,", Language::JmesPath).is_err());
    }
}
