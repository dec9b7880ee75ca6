//! JSONPath as Json.NET (Newtonsoft) evaluates it, which is what MedTech runs.
//!
//! This is deliberately not RFC 9535: the differences decide whether a mapping
//! matches at all. The behaviours copied from Newtonsoft (`JPath`, `QueryScanFilter`,
//! `BooleanQueryExpression`, `ScanFilter`):
//!
//! * `$..[?(@x)]` tests the token itself **and** every descendant value (objects,
//!   arrays and primitives, the root included), in document order.
//! * `@x` is the same as `@.x`; an "exists" test passes for any present value,
//!   `null` included.
//! * `[?(...)]` (no scan) tests the elements of arrays only.
//! * `==` compares numbers numerically and strings exactly; a number never
//!   equals a string. `<`, `>`... compare numbers or strings (ordinal).
//! * `.*` yields an object's values, `[*]` an array's elements.
//! * [`JsonPath::select_token`] fails when the path matches several tokens.
//!
//! The leading `$` is optional, as in `SelectToken("hr")`.

use serde_json::Value;
use std::fmt;

/// A compiled JSONPath expression.
#[derive(Debug, Clone)]
pub(crate) struct JsonPath {
    source: String,
    segments: Vec<Segment>,
}

/// Why an expression did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    /// The expression text.
    pub(crate) expression: String,
    /// Character offset of the problem.
    pub(crate) position: usize,
    /// What is wrong, in plain words.
    pub(crate) message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSONPath {:?} at character {}: {}", self.expression, self.position, self.message)
    }
}

impl std::error::Error for ParseError {}

/// `SelectToken` found more than one token (Newtonsoft throws "Path returned multiple tokens").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeveralTokens(pub usize);

#[derive(Debug, Clone)]
enum Segment {
    /// `.name` / `['a','b']`: property values of objects.
    Fields(Vec<String>),
    /// `.*`: every property value of objects.
    AllFields,
    /// `[1]`, `[0,2]`: array elements.
    Indexes(Vec<i64>),
    /// `[*]`: every array element.
    AllElements,
    /// `[start:end:step]`.
    Slice(Option<i64>, Option<i64>, i64),
    /// `..name` (None for `..*`).
    Scan(Option<String>),
    /// `..['a','b']`.
    ScanMulti(Vec<String>),
    /// `[?(...)]`.
    Filter(Box<Expr>),
    /// `..[?(...)]`.
    ScanFilter(Box<Expr>),
}

#[derive(Debug, Clone)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Exists(Operand),
    Compare(Operand, Op, Operand),
}

#[derive(Debug, Clone)]
enum Operand {
    /// `@...` (relative) or `$...` (root) with the path after it.
    Path {
        root: bool,
        segments: Vec<Segment>,
    },
    Value(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    StrictEq,
    StrictNe,
    Lt,
    Le,
    Gt,
    Ge,
}

impl JsonPath {
    /// Compiles an expression.
    pub(crate) fn parse(expression: &str) -> Result<JsonPath, ParseError> {
        let mut p = Parser { chars: expression.chars().collect(), pos: 0, source: expression };
        p.skip_ws();
        if p.peek() == Some('$') {
            p.pos += 1;
        }
        let segments = p.parse_segments(false)?;
        p.skip_ws();
        if p.pos < p.chars.len() {
            return Err(p.err("unexpected character"));
        }
        Ok(JsonPath { source: expression.to_string(), segments })
    }

    /// The expression as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// Newtonsoft `SelectTokens`: every match, in document order.
    pub(crate) fn select_tokens<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        eval_segments(&self.segments, root, vec![root])
    }

    /// Newtonsoft `SelectToken`: the single match, `None` when nothing matched,
    /// an error when several tokens matched.
    pub(crate) fn select_token<'a>(&self, root: &'a Value) -> Result<Option<&'a Value>, SeveralTokens> {
        let all = self.select_tokens(root);
        match all.len() {
            0 => Ok(None),
            1 => Ok(all.into_iter().next()),
            n => Err(SeveralTokens(n)),
        }
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

struct Parser<'s> {
    chars: Vec<char>,
    pos: usize,
    source: &'s str,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> ParseError {
        ParseError { expression: self.source.to_string(), position: self.pos, message: message.to_string() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(&format!("expected '{c}'")))
        }
    }

    /// Segments until the end, or (inside a filter) until a character that ends an operand.
    fn parse_segments(&mut self, in_query: bool) -> Result<Vec<Segment>, ParseError> {
        let mut segs = Vec::new();
        let mut first = true;
        while let Some(c) = self.peek() {
            match c {
                '.' => {
                    if self.peek_at(1) == Some('.') {
                        self.pos += 2;
                        match self.peek() {
                            Some('[') => segs.push(self.parse_bracket(true)?),
                            Some('*') => {
                                self.pos += 1;
                                segs.push(Segment::Scan(None));
                            }
                            _ => {
                                let name = self.parse_name(in_query)?;
                                segs.push(Segment::Scan(Some(name)));
                            }
                        }
                    } else {
                        self.pos += 1;
                        if self.eat('*') {
                            segs.push(Segment::AllFields);
                        } else if self.peek() == Some('[') {
                            // `$.['a']` is accepted by Newtonsoft as `$['a']`.
                            segs.push(self.parse_bracket(false)?);
                        } else {
                            let name = self.parse_name(in_query)?;
                            segs.push(Segment::Fields(vec![name]));
                        }
                    }
                }
                '[' => segs.push(self.parse_bracket(false)?),
                '*' if first => {
                    self.pos += 1;
                    segs.push(Segment::AllFields);
                }
                c if first && is_name_char(c, in_query) => {
                    // A leading name without a dot (`hr`, or `@hr` inside a filter).
                    let name = self.parse_name(in_query)?;
                    segs.push(Segment::Fields(vec![name]));
                }
                _ => {
                    if in_query {
                        break;
                    }
                    return Err(self.err("unexpected character"));
                }
            }
            first = false;
        }
        Ok(segs)
    }

    fn parse_name(&mut self, in_query: bool) -> Result<String, ParseError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| is_name_char(c, in_query)) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expected a property name"));
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn parse_bracket(&mut self, scan: bool) -> Result<Segment, ParseError> {
        self.expect('[')?;
        self.skip_ws();
        let seg = match self.peek() {
            Some('?') => {
                self.pos += 1;
                self.skip_ws();
                self.expect('(')?;
                let e = self.parse_or()?;
                self.skip_ws();
                self.expect(')')?;
                if scan {
                    Segment::ScanFilter(Box::new(e))
                } else {
                    Segment::Filter(Box::new(e))
                }
            }
            Some('(') => return Err(self.err("script expressions `[(...)]` are not supported by Json.NET")),
            Some('*') => {
                self.pos += 1;
                if scan {
                    Segment::Scan(None)
                } else {
                    Segment::AllElements
                }
            }
            Some('\'') | Some('"') => {
                let mut names = vec![self.parse_string()?];
                loop {
                    self.skip_ws();
                    if !self.eat(',') {
                        break;
                    }
                    self.skip_ws();
                    names.push(self.parse_string()?);
                }
                if scan {
                    if names.len() == 1 {
                        Segment::Scan(names.pop())
                    } else {
                        Segment::ScanMulti(names)
                    }
                } else {
                    Segment::Fields(names)
                }
            }
            _ => self.parse_index_or_slice()?,
        };
        self.skip_ws();
        self.expect(']')?;
        Ok(seg)
    }

    fn parse_int(&mut self) -> Result<Option<i64>, ParseError> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Ok(None);
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        text.parse::<i64>().map(Some).map_err(|_| self.err("expected an integer"))
    }

    fn parse_index_or_slice(&mut self) -> Result<Segment, ParseError> {
        let first = self.parse_int()?;
        self.skip_ws();
        if self.peek() == Some(':') {
            self.pos += 1;
            let end = self.parse_int()?;
            self.skip_ws();
            let step = if self.eat(':') { self.parse_int()?.unwrap_or(1) } else { 1 };
            if step == 0 {
                return Err(self.err("slice step cannot be 0"));
            }
            return Ok(Segment::Slice(first, end, step));
        }
        let Some(first) = first else { return Err(self.err("expected an index, a name, '*' or '?(...)'")) };
        let mut idx = vec![first];
        loop {
            self.skip_ws();
            if !self.eat(',') {
                break;
            }
            match self.parse_int()? {
                Some(i) => idx.push(i),
                None => return Err(self.err("expected an index")),
            }
        }
        Ok(Segment::Indexes(idx))
    }

    fn parse_string(&mut self) -> Result<String, ParseError> {
        let quote = self.peek().ok_or_else(|| self.err("expected a quoted string"))?;
        if quote != '\'' && quote != '"' {
            return Err(self.err("expected a quoted string"));
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some('r') => out.push('\r'),
                        Some(c) => out.push(c),
                        None => return Err(self.err("unterminated string")),
                    }
                    self.pos += 1;
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn parse_or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.parse_and()?;
        loop {
            self.skip_ws();
            if self.peek() == Some('|') && self.peek_at(1) == Some('|') {
                self.pos += 2;
                let right = self.parse_and()?;
                left = Expr::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn parse_and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.parse_primary()?;
        loop {
            self.skip_ws();
            if self.peek() == Some('&') && self.peek_at(1) == Some('&') {
                self.pos += 2;
                let right = self.parse_primary()?;
                left = Expr::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn parse_primary(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        if self.peek() == Some('(') {
            self.pos += 1;
            let e = self.parse_or()?;
            self.skip_ws();
            self.expect(')')?;
            return Ok(e);
        }
        let left = self.parse_operand()?;
        self.skip_ws();
        let op = match (self.peek(), self.peek_at(1), self.peek_at(2)) {
            (Some('='), Some('='), Some('=')) => Some((Op::StrictEq, 3)),
            (Some('!'), Some('='), Some('=')) => Some((Op::StrictNe, 3)),
            (Some('='), Some('='), _) => Some((Op::Eq, 2)),
            (Some('!'), Some('='), _) => Some((Op::Ne, 2)),
            (Some('<'), Some('='), _) => Some((Op::Le, 2)),
            (Some('>'), Some('='), _) => Some((Op::Ge, 2)),
            (Some('<'), _, _) => Some((Op::Lt, 1)),
            (Some('>'), _, _) => Some((Op::Gt, 1)),
            (Some('='), Some('~'), _) => return Err(self.err("regular expressions (=~) are not supported by this preview")),
            _ => None,
        };
        match op {
            None => match left {
                Operand::Path { .. } => Ok(Expr::Exists(left)),
                Operand::Value(_) => Err(self.err("a constant alone is not a test; compare it with a path")),
            },
            Some((op, n)) => {
                self.pos += n;
                let right = self.parse_operand()?;
                Ok(Expr::Compare(left, op, right))
            }
        }
    }

    fn parse_operand(&mut self) -> Result<Operand, ParseError> {
        self.skip_ws();
        match self.peek() {
            Some('@') | Some('$') => {
                let root = self.peek() == Some('$');
                self.pos += 1;
                let segments = self.parse_segments(true)?;
                Ok(Operand::Path { root, segments })
            }
            Some('\'') | Some('"') => Ok(Operand::Value(Value::String(self.parse_string()?))),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                let v: Value = serde_json::from_str(&text).map_err(|_| self.err("invalid number"))?;
                Ok(Operand::Value(v))
            }
            _ => {
                for (word, v) in [("true", Value::Bool(true)), ("false", Value::Bool(false)), ("null", Value::Null)] {
                    let end = self.pos + word.len();
                    if end <= self.chars.len() && self.chars[self.pos..end].iter().copied().eq(word.chars()) {
                        self.pos = end;
                        return Ok(Operand::Value(v));
                    }
                }
                Err(self.err("expected @, $, a string, a number, true, false or null"))
            }
        }
    }
}

fn is_name_char(c: char, in_query: bool) -> bool {
    if matches!(c, '.' | '[' | ']' | '(' | ')') || c.is_whitespace() {
        return false;
    }
    if in_query && matches!(c, '=' | '!' | '<' | '>' | '&' | '|' | ',') {
        return false;
    }
    c != '*'
}

fn eval_segments<'a>(segments: &[Segment], root: &'a Value, start: Vec<&'a Value>) -> Vec<&'a Value> {
    let mut current = start;
    for seg in segments {
        let mut next = Vec::new();
        for t in current {
            apply(seg, root, t, &mut next);
        }
        current = next;
        if current.is_empty() {
            break;
        }
    }
    current
}

/// Pre-order list of a token and all its descendant values (Newtonsoft `DescendantsAndSelf`,
/// without the `JProperty` wrappers, which never match a field test).
fn descendants_and_self<'a>(t: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(t);
    match t {
        Value::Object(m) => m.values().for_each(|v| descendants_and_self(v, out)),
        Value::Array(a) => a.iter().for_each(|v| descendants_and_self(v, out)),
        _ => {}
    }
}

/// Newtonsoft `ScanFilter`: property values named `name` among the descendants
/// (everything below, and the token itself for `..*`).
fn scan<'a>(t: &'a Value, name: Option<&str>, out: &mut Vec<&'a Value>) {
    match t {
        Value::Object(m) => {
            for (k, v) in m {
                match name {
                    Some(n) if n == k => out.push(v),
                    None => out.push(v),
                    _ => {}
                }
                scan(v, name, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                if name.is_none() {
                    out.push(v);
                }
                scan(v, name, out);
            }
        }
        _ => {}
    }
}

fn resolve_index(len: usize, i: i64) -> Option<usize> {
    if i < 0 {
        let back = usize::try_from(i.unsigned_abs()).ok()?;
        len.checked_sub(back)
    } else {
        usize::try_from(i).ok().filter(|i| *i < len)
    }
}

fn apply<'a>(seg: &Segment, root: &'a Value, t: &'a Value, out: &mut Vec<&'a Value>) {
    match seg {
        Segment::Fields(names) => {
            if let Value::Object(m) = t {
                out.extend(names.iter().filter_map(|n| m.get(n)));
            }
        }
        Segment::AllFields => {
            if let Value::Object(m) = t {
                out.extend(m.values());
            }
        }
        Segment::Indexes(idx) => {
            if let Value::Array(a) = t {
                out.extend(idx.iter().filter_map(|i| resolve_index(a.len(), *i)).filter_map(|i| a.get(i)));
            }
        }
        Segment::AllElements => {
            if let Value::Array(a) = t {
                out.extend(a.iter());
            }
        }
        Segment::Slice(start, end, step) => {
            if let Value::Array(a) = t {
                let len = a.len() as i64;
                let norm = |v: i64| if v < 0 { (len + v).max(0) } else { v.min(len) };
                if *step > 0 {
                    let mut i = norm(start.unwrap_or(0));
                    let e = norm(end.unwrap_or(len));
                    while i < e {
                        if let Some(v) = usize::try_from(i).ok().and_then(|i| a.get(i)) {
                            out.push(v);
                        }
                        i += step;
                    }
                } else {
                    let mut i = start.map(norm).unwrap_or(len - 1).min(len - 1);
                    let e = end.map(norm).unwrap_or(-1);
                    while i > e {
                        if let Some(v) = usize::try_from(i).ok().and_then(|i| a.get(i)) {
                            out.push(v);
                        }
                        i += step;
                    }
                }
            }
        }
        Segment::Scan(name) => {
            if name.is_none() {
                out.push(t);
            }
            scan(t, name.as_deref(), out);
        }
        Segment::ScanMulti(names) => {
            for n in names {
                scan(t, Some(n), out);
            }
        }
        Segment::Filter(e) => {
            if let Value::Array(a) = t {
                out.extend(a.iter().filter(|v| is_match(e, root, v)));
            }
        }
        Segment::ScanFilter(e) => {
            let mut all = Vec::new();
            descendants_and_self(t, &mut all);
            out.extend(all.into_iter().filter(|v| is_match(e, root, v)));
        }
    }
}

fn operand_values<'a>(o: &'a Operand, root: &'a Value, t: &'a Value) -> Vec<&'a Value> {
    match o {
        Operand::Value(v) => vec![v],
        Operand::Path { root: true, segments } => eval_segments(segments, root, vec![root]),
        Operand::Path { root: false, segments } => eval_segments(segments, root, vec![t]),
    }
}

fn is_match(e: &Expr, root: &Value, t: &Value) -> bool {
    match e {
        Expr::And(a, b) => is_match(a, root, t) && is_match(b, root, t),
        Expr::Or(a, b) => is_match(a, root, t) || is_match(b, root, t),
        Expr::Exists(o) => !operand_values(o, root, t).is_empty(),
        Expr::Compare(l, op, r) => {
            let lv = operand_values(l, root, t);
            if lv.is_empty() {
                return false;
            }
            let rv = operand_values(r, root, t);
            lv.iter().any(|a| rv.iter().any(|b| match_tokens(a, *op, b)))
        }
    }
}

fn is_primitive(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

fn match_tokens(a: &Value, op: Op, b: &Value) -> bool {
    if !(is_primitive(a) && is_primitive(b)) {
        // Json.NET: only primitives compare; "not equals" is always true otherwise.
        return matches!(op, Op::Ne | Op::StrictNe);
    }
    match op {
        Op::Eq => loose_eq(a, b),
        Op::Ne => !loose_eq(a, b),
        Op::StrictEq => strict_eq(a, b),
        Op::StrictNe => !strict_eq(a, b),
        Op::Lt => compare(a, b).is_some_and(|o| o.is_lt()),
        Op::Le => compare(a, b).is_some_and(|o| o.is_le()),
        Op::Gt => compare(a, b).is_some_and(|o| o.is_gt()),
        Op::Ge => compare(a, b).is_some_and(|o| o.is_ge()),
    }
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.is_f64() == y.is_f64()) && x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(path: &str, v: &Value) -> Vec<Value> {
        JsonPath::parse(path).unwrap().select_tokens(v).into_iter().cloned().collect()
    }

    #[test]
    fn scan_filter_tests_root_and_object_values() {
        let v = json!({"hr": 1, "a": {"hr": 2, "b": [{"hr": 3}, {"x": 4}]}, "c": {"hr": null}});
        let got = sel("$..[?(@hr)]", &v);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0]["hr"], 1); // the root itself
        assert_eq!(got[1]["hr"], 2); // an object-valued property
        assert_eq!(got[2]["hr"], 3); // an array element
        assert!(got[3]["hr"].is_null()); // exists passes for null
    }

    #[test]
    fn plain_filter_tests_array_elements_only() {
        let v = json!({"r": [{"type": "a", "v": 1}, {"type": "b"}, {"type": "a"}], "o": {"x": {"type": "a"}}});
        assert_eq!(sel("$.r[?(@.type == 'a' && @.v)]", &v), vec![json!({"type": "a", "v": 1})]);
        assert_eq!(sel("$.r[?(@.type == 'a')]", &v).len(), 2);
        assert!(sel("$.o[?(@.type == 'a')]", &v).is_empty());
        assert_eq!(sel("$.r[?(@.type != 'a' || @.v > 0)]", &v).len(), 2);
    }

    #[test]
    fn numbers_never_equal_strings() {
        let v = json!([{"a": 5}, {"a": "5"}, {"a": 5.0}]);
        assert_eq!(sel("$[?(@.a == 5)]", &v).len(), 2);
        assert_eq!(sel("$[?(@.a == '5')]", &v).len(), 1);
    }

    #[test]
    fn select_token_fails_on_several() {
        let v = json!({"a": [{"x": 1}, {"x": 2}]});
        let p = JsonPath::parse("$..x").unwrap();
        assert_eq!(p.select_token(&v), Err(SeveralTokens(2)));
        assert_eq!(JsonPath::parse("$.a[1].x").unwrap().select_token(&v), Ok(Some(&json!(2))));
        assert_eq!(JsonPath::parse("$.a[-1].x").unwrap().select_token(&v), Ok(Some(&json!(2))));
        assert_eq!(JsonPath::parse("$.nope").unwrap().select_token(&v), Ok(None));
    }

    #[test]
    fn names_brackets_wildcards_slices() {
        let v = json!({"Properties": {"iothub-creation-time-utc": "t"}, "a": [1, 2, 3, 4], "o": {"p": 1, "q": 2}});
        assert_eq!(sel("$.Properties.iothub-creation-time-utc", &v), vec![json!("t")]);
        assert_eq!(sel("$['Properties']['iothub-creation-time-utc']", &v), vec![json!("t")]);
        assert_eq!(sel("Properties.iothub-creation-time-utc", &v), vec![json!("t")]);
        assert_eq!(sel("$.a[*]", &v).len(), 4);
        assert_eq!(sel("$.o.*", &v), vec![json!(1), json!(2)]);
        assert_eq!(sel("$.a[1:3]", &v), vec![json!(2), json!(3)]);
        assert_eq!(sel("$.a[0,2]", &v), vec![json!(1), json!(3)]);
        assert_eq!(sel("$.a[?(@ > 2)]", &v), vec![json!(3), json!(4)]);
        assert_eq!(sel("$..*", &json!({"a": {"b": 1}})).len(), 3);
    }

    #[test]
    fn iot_style_envelope_filter_matches_root() {
        let env = json!({"Body": {"heartrate": "203"}, "Properties": {}, "SystemProperties": {}});
        let got = sel("$..[?(@Body.heartrate)]", &env);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["Body"]["heartrate"], "203");
    }

    #[test]
    fn parse_errors_say_where() {
        let e = JsonPath::parse("$.a[?(@.x == )]").unwrap_err();
        assert!(e.position > 0 && e.to_string().contains("invalid JSONPath"));
        assert!(JsonPath::parse("$.a[").is_err());
        assert!(JsonPath::parse("$.a[?(@.x =~ /a/)]").is_err());
    }
}
