//! What a request costs, as Envoy AI Gateway's `llmRequestCosts` define it: each entry a
//! `metadataKey` and a `type` (`InputToken`, `CachedInputToken`, `CacheCreationInputToken`,
//! `OutputToken`, `TotalToken`, `ReasoningToken`, or `CEL` with an expression). The value is an
//! unsigned integer (money in integer units such as micro-dollars), published under its key for
//! access logs and rate limits.
//!
//! `CEL` expressions are compiled when the configuration loads, in the part of CEL that cost
//! formulas use: literals (`1`, `2u`, `0.5`, `'text'`, `true`), AI Gateway's variables, arithmetic,
//! comparisons, `&&`, `||`, `!`, `? :`, `in` a list, `uint()`, `int()`, `double()`, `size()`, and
//! the string methods `startsWith`, `endsWith` and `contains`. AI Gateway's variables but
//! `route_name` (the backend stage does not know which AIGatewayRoute chose it). Types are checked as CEL checks them:
//! no implicit conversions (`input_tokens * 2` is an error, `input_tokens * 2u` is not), and the
//! result must be an int or a uint. Anything else is refused when the configuration loads, so a
//! formula never silently means something else.

use crate::translated::TokenUsage;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};

/// One `llmRequestCosts` entry as the plugin configuration states it (`request_costs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequestCost {
    pub metadata_key: String,
    /// `InputToken`, `OutputToken`, `CachedInputToken`, `CacheCreationInputToken`, `TotalToken`
    /// or `CEL`.
    #[serde(rename = "type", default = "output_token")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cel: Option<String>,
}

fn output_token() -> String {
    "OutputToken".into()
}

/// One `llmRequestCosts` entry, ready to evaluate.
#[derive(Debug, Clone)]
pub struct RequestCost {
    /// Interned: samples and summaries carry it without copying.
    pub metadata_key: &'static str,
    formula: Formula,
}

#[derive(Debug, Clone)]
enum Formula {
    Tokens(TokenKind),
    Cel(Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Input,
    CachedInput,
    CacheCreationInput,
    Output,
    Total,
    Reasoning,
}

/// What a cost formula is evaluated with.
pub struct CostInputs<'a> {
    /// The Bedrock model that answered (after a backend's `modelNameOverride`): prices are per model.
    pub model: &'a str,
    pub backend: &'a str,
    pub usage: &'a TokenUsage,
}

impl CostInputs<'_> {
    fn tokens(&self, kind: TokenKind) -> u64 {
        let usage = self.usage;
        // Input counts every input token, cached ones included, as OpenTelemetry and AI Gateway count them.
        let input = usage
            .input
            .saturating_add(usage.cache_read)
            .saturating_add(usage.cache_write);
        match kind {
            TokenKind::Input => input,
            TokenKind::CachedInput => usage.cache_read,
            TokenKind::CacheCreationInput => usage.cache_write,
            TokenKind::Output => usage.output,
            TokenKind::Total => input.saturating_add(usage.output),
            // Bedrock reports no reasoning tokens apart from output tokens.
            TokenKind::Reasoning => 0,
        }
    }
}

/// Keys live as long as the process: a handful per configuration, each interned once.
fn intern(key: &str) -> &'static str {
    static KEYS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut keys = KEYS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = keys.get(key) {
        return known;
    }
    let leaked: &'static str = Box::leak(key.to_owned().into_boxed_str());
    keys.insert(leaked);
    leaked
}

impl RequestCost {
    pub fn parse(raw: RawRequestCost) -> Result<RequestCost, String> {
        let valid_key = !raw.metadata_key.is_empty()
            && raw
                .metadata_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid_key {
            return Err(format!(
                "metadata_key {:?} must be letters, digits, `_`, `-` or `.`",
                raw.metadata_key
            ));
        }
        let kind = match raw.kind.as_str() {
            "InputToken" => Some(TokenKind::Input),
            "CachedInputToken" => Some(TokenKind::CachedInput),
            "CacheCreationInputToken" => Some(TokenKind::CacheCreationInput),
            "OutputToken" => Some(TokenKind::Output),
            "TotalToken" => Some(TokenKind::Total),
            "ReasoningToken" => Some(TokenKind::Reasoning),
            "CEL" => None,
            other => {
                return Err(format!(
                    "type {other:?} is not one of AI Gateway's cost types"
                ))
            }
        };
        let formula = match (kind, raw.cel) {
            (Some(kind), None) => Formula::Tokens(kind),
            (None, Some(cel)) => Formula::Cel(compile(&cel).map_err(|e| format!("cel: {e}"))?),
            (None, None) => return Err("type CEL needs a cel expression".into()),
            (Some(_), Some(_)) => return Err("a cel expression needs type CEL".into()),
        };
        Ok(RequestCost {
            metadata_key: intern(&raw.metadata_key),
            formula,
        })
    }

    /// The request's cost, or why it has none (an overflow, a division by zero, a negative result).
    pub fn evaluate(&self, inputs: &CostInputs<'_>) -> Result<u64, String> {
        match &self.formula {
            Formula::Tokens(kind) => Ok(inputs.tokens(*kind)),
            Formula::Cel(expr) => match expr.eval(inputs)? {
                Value::Uint(n) => Ok(n),
                Value::Int(n) => {
                    u64::try_from(n).map_err(|_| format!("the cost is negative ({n})"))
                }
                _ => Err("the cost is not a number".into()),
            },
        }
    }
}

/// Checks a CEL cost expression as the configuration would (for the renderer).
pub fn check_cel(expression: &str) -> Result<(), String> {
    compile(expression).map(|_| ())
}

// ---- The expression language ----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Int,
    Uint,
    Double,
    String,
    Bool,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Int => "int",
            Type::Uint => "uint",
            Type::Double => "double",
            Type::String => "string",
            Type::Bool => "bool",
        })
    }
}

/// A value; strings borrow from the expression or the request where they can, so that evaluating
/// `model.contains('claude')` allocates nothing.
#[derive(Debug, Clone, PartialEq)]
enum Value<'a> {
    Int(i64),
    Uint(u64),
    Double(f64),
    String(Cow<'a, str>),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variable {
    Model,
    Backend,
    Tokens(TokenKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StringTest {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone)]
enum Expr {
    Literal(Value<'static>),
    Variable(Variable),
    Negate(Box<Expr>),
    Not(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Conditional(Box<Expr>, Box<Expr>, Box<Expr>),
    Convert(Type, Box<Expr>),
    Size(Box<Expr>),
    StringTest(StringTest, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Vec<Expr>),
}

fn compile(source: &str) -> Result<Expr, String> {
    let tokens = lex(source)?;
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.conditional()?;
    if let Some(extra) = parser.tokens.get(parser.at) {
        return Err(format!(
            "unexpected {} after the expression",
            extra.describe()
        ));
    }
    match expr.check()? {
        Type::Int | Type::Uint => Ok(expr),
        other => Err(format!(
            "the result is a {other}; a cost must be an int or a uint (convert with uint())"
        )),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
    Ident(String),
    Symbol(&'static str),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Int(n) => n.to_string(),
            Token::Uint(n) => format!("{n}u"),
            Token::Double(n) => n.to_string(),
            Token::String(s) => format!("{s:?}"),
            Token::Ident(name) => format!("`{name}`"),
            Token::Symbol(s) => format!("`{s}`"),
        }
    }
}

const SYMBOLS: [&str; 22] = [
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "?", ":", "(", ")",
    ",", ".", "[", "]",
];

fn lex(source: &str) -> Result<Vec<Token>, String> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii_whitespace() {
            i += 1;
        } else if b.is_ascii_digit() {
            let start = i;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let fraction =
                bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            let exponent = |i: usize| matches!(bytes.get(i), Some(b'e' | b'E'));
            if fraction || exponent(i) {
                if fraction {
                    i += 1;
                    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                }
                if exponent(i) {
                    i += 1;
                    if matches!(bytes.get(i), Some(b'+' | b'-')) {
                        i += 1;
                    }
                    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                }
                let text = source.get(start..i).unwrap_or_default();
                tokens.push(Token::Double(
                    text.parse().map_err(|_| format!("bad number {text}"))?,
                ));
            } else {
                let text = source.get(start..i).unwrap_or_default();
                if matches!(bytes.get(i), Some(b'u' | b'U')) {
                    i += 1;
                    tokens.push(Token::Uint(
                        text.parse()
                            .map_err(|_| format!("{text}u is out of range"))?,
                    ));
                } else {
                    tokens.push(Token::Int(
                        text.parse()
                            .map_err(|_| format!("{text} is out of range"))?,
                    ));
                }
            }
        } else if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
            {
                i += 1;
            }
            tokens.push(Token::Ident(
                source.get(start..i).unwrap_or_default().to_owned(),
            ));
        } else if b == b'"' || b == b'\'' {
            i += 1;
            let mut text = String::new();
            loop {
                let Some(c) = source.get(i..).and_then(|rest| rest.chars().next()) else {
                    return Err("a string is not closed".into());
                };
                i += c.len_utf8();
                if c as u32 == u32::from(b) {
                    break;
                }
                if c == '\\' {
                    let Some(escaped) = source.get(i..).and_then(|rest| rest.chars().next()) else {
                        return Err("a string is not closed".into());
                    };
                    i += escaped.len_utf8();
                    text.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        '\\' | '\'' | '"' => escaped,
                        other => return Err(format!("unsupported escape \\{other}")),
                    });
                } else {
                    text.push(c);
                }
            }
            tokens.push(Token::String(text));
        } else {
            let rest = source.get(i..).unwrap_or_default();
            let Some(symbol) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) else {
                return Err(format!(
                    "unexpected character {:?}",
                    rest.chars().next().unwrap_or(' ')
                ));
            };
            tokens.push(Token::Symbol(symbol));
            i += symbol.len();
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek_symbol(&self) -> Option<&'static str> {
        match self.tokens.get(self.at) {
            Some(Token::Symbol(s)) => Some(s),
            _ => None,
        }
    }

    fn eat(&mut self, symbol: &str) -> bool {
        if self.peek_symbol() == Some(symbol) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, symbol: &str) -> Result<(), String> {
        if self.eat(symbol) {
            Ok(())
        } else {
            Err(match self.tokens.get(self.at) {
                Some(token) => format!("expected `{symbol}`, found {}", token.describe()),
                None => format!("expected `{symbol}` at the end"),
            })
        }
    }

    fn conditional(&mut self) -> Result<Expr, String> {
        let condition = self.or()?;
        if !self.eat("?") {
            return Ok(condition);
        }
        let then = self.conditional()?;
        self.expect(":")?;
        let otherwise = self.conditional()?;
        Ok(Expr::Conditional(
            Box::new(condition),
            Box::new(then),
            Box::new(otherwise),
        ))
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.relation()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.relation()?));
        }
        Ok(left)
    }

    fn relation(&mut self) -> Result<Expr, String> {
        let mut left = self.sum()?;
        loop {
            let op = match self.peek_symbol() {
                Some("==") => BinaryOp::Eq,
                Some("!=") => BinaryOp::Ne,
                Some("<") => BinaryOp::Lt,
                Some("<=") => BinaryOp::Le,
                Some(">") => BinaryOp::Gt,
                Some(">=") => BinaryOp::Ge,
                _ => {
                    if matches!(self.tokens.get(self.at), Some(Token::Ident(w)) if w == "in") {
                        self.at += 1;
                        self.expect("[")?;
                        let mut items = Vec::new();
                        if !self.eat("]") {
                            loop {
                                items.push(self.conditional()?);
                                if self.eat("]") {
                                    break;
                                }
                                self.expect(",")?;
                            }
                        }
                        left = Expr::In(Box::new(left), items);
                        continue;
                    }
                    return Ok(left);
                }
            };
            self.at += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.sum()?));
        }
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        loop {
            let op = match self.peek_symbol() {
                Some("+") => BinaryOp::Add,
                Some("-") => BinaryOp::Sub,
                _ => return Ok(left),
            };
            self.at += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek_symbol() {
                Some("*") => BinaryOp::Mul,
                Some("/") => BinaryOp::Div,
                Some("%") => BinaryOp::Rem,
                _ => return Ok(left),
            };
            self.at += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("-") {
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let primary = self.primary()?;
        self.member(primary)
    }

    /// `.startsWith(...)` and its kind after an operand.
    fn member(&mut self, mut target: Expr) -> Result<Expr, String> {
        while self.eat(".") {
            let Some(Token::Ident(name)) = self.tokens.get(self.at).cloned() else {
                return Err("expected a method name after `.`".into());
            };
            self.at += 1;
            let test = match name.as_str() {
                "startsWith" => StringTest::StartsWith,
                "endsWith" => StringTest::EndsWith,
                "contains" => StringTest::Contains,
                other => return Err(format!("the method {other}() is not supported")),
            };
            self.expect("(")?;
            let argument = self.conditional()?;
            self.expect(")")?;
            target = Expr::StringTest(test, Box::new(target), Box::new(argument));
        }
        Ok(target)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let Some(token) = self.tokens.get(self.at).cloned() else {
            return Err("the expression ends too early".into());
        };
        self.at += 1;
        Ok(match token {
            Token::Int(n) => Expr::Literal(Value::Int(n)),
            Token::Uint(n) => Expr::Literal(Value::Uint(n)),
            Token::Double(n) => Expr::Literal(Value::Double(n)),
            Token::String(s) => Expr::Literal(Value::String(Cow::Owned(s))),
            Token::Symbol("(") => {
                let inner = self.conditional()?;
                self.expect(")")?;
                inner
            }
            Token::Ident(name) => {
                if self.peek_symbol() == Some("(") {
                    let build: fn(Box<Expr>) -> Expr = match name.as_str() {
                        "uint" => |a| Expr::Convert(Type::Uint, a),
                        "int" => |a| Expr::Convert(Type::Int, a),
                        "double" => |a| Expr::Convert(Type::Double, a),
                        "size" => Expr::Size,
                        other => return Err(format!("the function {other}() is not supported")),
                    };
                    self.at += 1;
                    let argument = self.conditional()?;
                    self.expect(")")?;
                    return Ok(build(Box::new(argument)));
                }
                match name.as_str() {
                    "true" => Expr::Literal(Value::Bool(true)),
                    "false" => Expr::Literal(Value::Bool(false)),
                    "model" => Expr::Variable(Variable::Model),
                    "backend" => Expr::Variable(Variable::Backend),
                    "route_name" => {
                        return Err(
                            "route_name is not available to this gateway's costs (use model or backend)"
                                .into(),
                        )
                    }
                    "input_tokens" => Expr::Variable(Variable::Tokens(TokenKind::Input)),
                    "cached_input_tokens" => {
                        Expr::Variable(Variable::Tokens(TokenKind::CachedInput))
                    }
                    "cache_creation_input_tokens" => {
                        Expr::Variable(Variable::Tokens(TokenKind::CacheCreationInput))
                    }
                    "output_tokens" => Expr::Variable(Variable::Tokens(TokenKind::Output)),
                    "total_tokens" => Expr::Variable(Variable::Tokens(TokenKind::Total)),
                    "reasoning_tokens" => Expr::Variable(Variable::Tokens(TokenKind::Reasoning)),
                    other => return Err(format!("unknown variable {other}")),
                }
            }
            other => return Err(format!("unexpected {}", other.describe())),
        })
    }
}

impl Expr {
    /// The expression's type, as CEL's checker finds it (no implicit conversions).
    fn check(&self) -> Result<Type, String> {
        match self {
            Expr::Literal(value) => Ok(match value {
                Value::Int(_) => Type::Int,
                Value::Uint(_) => Type::Uint,
                Value::Double(_) => Type::Double,
                Value::String(_) => Type::String,
                Value::Bool(_) => Type::Bool,
            }),
            Expr::Variable(Variable::Tokens(_)) => Ok(Type::Uint),
            Expr::Variable(_) => Ok(Type::String),
            Expr::Negate(inner) => match inner.check()? {
                t @ (Type::Int | Type::Double) => Ok(t),
                t => Err(format!("no negation of a {t}")),
            },
            Expr::Not(inner) => match inner.check()? {
                Type::Bool => Ok(Type::Bool),
                t => Err(format!("`!` needs a bool, not a {t}")),
            },
            Expr::Binary(op, left, right) => {
                let (l, r) = (left.check()?, right.check()?);
                if l != r {
                    return Err(format!(
                        "no {op:?} of a {l} and a {r} (CEL converts nothing implicitly: write 2u for a uint, or convert with uint() or double())"
                    ));
                }
                match op {
                    BinaryOp::Eq | BinaryOp::Ne => Ok(Type::Bool),
                    BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => match l {
                        Type::Bool => Err("bools cannot be ordered".into()),
                        _ => Ok(Type::Bool),
                    },
                    BinaryOp::Add => match l {
                        Type::Bool => Err("no addition of bools".into()),
                        t => Ok(t),
                    },
                    BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => match l {
                        Type::Int | Type::Uint | Type::Double => Ok(l),
                        t => Err(format!("no arithmetic on a {t}")),
                    },
                    BinaryOp::Rem => match l {
                        Type::Int | Type::Uint => Ok(l),
                        t => Err(format!("no `%` of a {t}")),
                    },
                }
            }
            Expr::And(left, right) | Expr::Or(left, right) => {
                match (left.check()?, right.check()?) {
                    (Type::Bool, Type::Bool) => Ok(Type::Bool),
                    (l, r) => Err(format!("`&&` and `||` need bools, not a {l} and a {r}")),
                }
            }
            Expr::Conditional(condition, then, otherwise) => {
                if condition.check()? != Type::Bool {
                    return Err("the condition of `? :` must be a bool".into());
                }
                let (t, o) = (then.check()?, otherwise.check()?);
                if t != o {
                    return Err(format!("the branches of `? :` are a {t} and a {o}"));
                }
                Ok(t)
            }
            Expr::Convert(to, inner) => match (to, inner.check()?) {
                (_, Type::Bool) => Err(format!("no {to}() of a bool")),
                (Type::Int | Type::Uint | Type::Double, Type::String) => {
                    Err(format!("{to}() of a string is not supported"))
                }
                (to, _) => Ok(*to),
            },
            Expr::Size(inner) => match inner.check()? {
                Type::String => Ok(Type::Int),
                t => Err(format!("no size() of a {t}")),
            },
            Expr::StringTest(_, target, argument) => match (target.check()?, argument.check()?) {
                (Type::String, Type::String) => Ok(Type::Bool),
                _ => Err("startsWith, endsWith and contains take strings".into()),
            },
            Expr::In(needle, items) => {
                let t = needle.check()?;
                for item in items {
                    if item.check()? != t {
                        return Err(format!("`in` a list of other types than {t}"));
                    }
                }
                Ok(Type::Bool)
            }
        }
    }

    fn eval<'a>(&'a self, inputs: &CostInputs<'a>) -> Result<Value<'a>, String> {
        Ok(match self {
            Expr::Literal(Value::String(text)) => Value::String(Cow::Borrowed(text)),
            Expr::Literal(value) => value.clone(),
            Expr::Variable(variable) => match variable {
                Variable::Model => Value::String(Cow::Borrowed(inputs.model)),
                Variable::Backend => Value::String(Cow::Borrowed(inputs.backend)),
                Variable::Tokens(kind) => Value::Uint(inputs.tokens(*kind)),
            },
            Expr::Negate(inner) => match inner.eval(inputs)? {
                Value::Int(n) => Value::Int(n.checked_neg().ok_or("int overflow")?),
                Value::Double(n) => Value::Double(-n),
                _ => return Err("no negation".into()),
            },
            Expr::Not(inner) => Value::Bool(!inner.eval(inputs)?.truthy()?),
            Expr::And(left, right) => {
                Value::Bool(left.eval(inputs)?.truthy()? && right.eval(inputs)?.truthy()?)
            }
            Expr::Or(left, right) => {
                Value::Bool(left.eval(inputs)?.truthy()? || right.eval(inputs)?.truthy()?)
            }
            Expr::Conditional(condition, then, otherwise) => {
                if condition.eval(inputs)?.truthy()? {
                    then.eval(inputs)?
                } else {
                    otherwise.eval(inputs)?
                }
            }
            Expr::Binary(op, left, right) => binary(*op, left.eval(inputs)?, right.eval(inputs)?)?,
            Expr::Convert(to, inner) => convert(*to, inner.eval(inputs)?)?,
            Expr::Size(inner) => match inner.eval(inputs)? {
                Value::String(s) => {
                    Value::Int(i64::try_from(s.chars().count()).map_err(|_| "too long")?)
                }
                _ => return Err("no size".into()),
            },
            Expr::StringTest(test, target, argument) => {
                match (target.eval(inputs)?, argument.eval(inputs)?) {
                    (Value::String(s), Value::String(a)) => Value::Bool(match test {
                        StringTest::StartsWith => s.starts_with(a.as_ref()),
                        StringTest::EndsWith => s.ends_with(a.as_ref()),
                        StringTest::Contains => contains(s.as_bytes(), a.as_bytes()),
                    }),
                    _ => return Err("string test of non-strings".into()),
                }
            }
            Expr::In(needle, items) => {
                let needle = needle.eval(inputs)?;
                let mut found = false;
                for item in items {
                    if item.eval(inputs)? == needle {
                        found = true;
                        break;
                    }
                }
                Value::Bool(found)
            }
        })
    }
}

impl Value<'_> {
    fn truthy(&self) -> Result<bool, String> {
        match self {
            Value::Bool(b) => Ok(*b),
            _ => Err("not a bool".into()),
        }
    }
}

/// Whether `needle` occurs in `haystack`, by comparing windows: for model ids and price-list
/// needles (tens of bytes) this costs a tenth of `str::contains`, whose searcher is built for long
/// texts (about 2,000 instructions a call, five calls a request for a price list).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(first) = needle.first() else {
        return true;
    };
    haystack
        .windows(needle.len())
        .any(|window| window.first() == Some(first) && window == needle)
}

fn binary<'a>(op: BinaryOp, left: Value<'a>, right: Value<'a>) -> Result<Value<'a>, String> {
    use std::cmp::Ordering;
    let ordering = match (&left, &right) {
        (Value::Int(a), Value::Int(b)) => a.partial_cmp(b),
        (Value::Uint(a), Value::Uint(b)) => a.partial_cmp(b),
        (Value::Double(a), Value::Double(b)) => a.partial_cmp(b),
        (Value::String(a), Value::String(b)) => a.partial_cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.partial_cmp(b),
        _ => None,
    };
    let compare = |test: fn(Ordering) -> bool| Ok(Value::Bool(ordering.is_some_and(test)));
    match op {
        BinaryOp::Eq => return compare(|o| o == Ordering::Equal),
        BinaryOp::Ne => return Ok(Value::Bool(ordering != Some(Ordering::Equal))),
        BinaryOp::Lt => return compare(|o| o == Ordering::Less),
        BinaryOp::Le => return compare(|o| o != Ordering::Greater),
        BinaryOp::Gt => return compare(|o| o == Ordering::Greater),
        BinaryOp::Ge => return compare(|o| o != Ordering::Less),
        _ => {}
    }
    let overflow = || format!("{op:?} overflows");
    Ok(match (left, right) {
        (Value::Int(a), Value::Int(b)) => Value::Int(
            match op {
                BinaryOp::Add => a.checked_add(b),
                BinaryOp::Sub => a.checked_sub(b),
                BinaryOp::Mul => a.checked_mul(b),
                BinaryOp::Div => a.checked_div(b),
                _ => a.checked_rem(b),
            }
            .ok_or_else(overflow)?,
        ),
        (Value::Uint(a), Value::Uint(b)) => Value::Uint(
            match op {
                BinaryOp::Add => a.checked_add(b),
                BinaryOp::Sub => a.checked_sub(b),
                BinaryOp::Mul => a.checked_mul(b),
                BinaryOp::Div => a.checked_div(b),
                _ => a.checked_rem(b),
            }
            .ok_or_else(overflow)?,
        ),
        (Value::Double(a), Value::Double(b)) => Value::Double(match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            _ => a / b,
        }),
        (Value::String(a), Value::String(b)) if op == BinaryOp::Add => {
            Value::String(Cow::Owned(a.into_owned() + &b))
        }
        _ => return Err(format!("no {op:?} of these values")),
    })
}

fn convert(to: Type, value: Value<'_>) -> Result<Value<'_>, String> {
    // The bounds as doubles: casts beyond them are CEL range errors, not saturation.
    const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0;
    const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let range = || format!("{to}() out of range");
    Ok(match (to, value) {
        (Type::Uint, Value::Uint(n)) => Value::Uint(n),
        (Type::Uint, Value::Int(n)) => Value::Uint(u64::try_from(n).map_err(|_| range())?),
        (Type::Uint, Value::Double(n)) if n > -1.0 && n < U64_LIMIT =>
        {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Value::Uint(n.trunc() as u64)
        }
        (Type::Int, Value::Int(n)) => Value::Int(n),
        (Type::Int, Value::Uint(n)) => Value::Int(i64::try_from(n).map_err(|_| range())?),
        (Type::Int, Value::Double(n)) if (-I64_LIMIT..I64_LIMIT).contains(&n) =>
        {
            #[allow(clippy::cast_possible_truncation)]
            Value::Int(n.trunc() as i64)
        }
        #[allow(clippy::cast_precision_loss)]
        (Type::Double, Value::Int(n)) => Value::Double(n as f64),
        #[allow(clippy::cast_precision_loss)]
        (Type::Double, Value::Uint(n)) => Value::Double(n as f64),
        (Type::Double, Value::Double(n)) => Value::Double(n),
        _ => return Err(range()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(kind: &str, cel: Option<&str>) -> Result<RequestCost, String> {
        RequestCost::parse(RawRequestCost {
            metadata_key: "k".into(),
            kind: kind.into(),
            cel: cel.map(str::to_owned),
        })
    }

    fn evaluate(cel: &str, usage: &TokenUsage, model: &str) -> Result<u64, String> {
        cost("CEL", Some(cel))?.evaluate(&CostInputs {
            model,
            backend: "bedrock-us-east-1",
            usage,
        })
    }

    const USAGE: TokenUsage = TokenUsage {
        input: 100,
        output: 40,
        cache_read: 1000,
        cache_write: 10,
    };

    #[test]
    fn token_types_count_as_ai_gateway_counts_them() {
        let inputs = CostInputs {
            model: "m",
            backend: "b",
            usage: &USAGE,
        };
        for (kind, expected) in [
            ("InputToken", 1110),
            ("CachedInputToken", 1000),
            ("CacheCreationInputToken", 10),
            ("OutputToken", 40),
            ("TotalToken", 1150),
            ("ReasoningToken", 0),
        ] {
            assert_eq!(
                cost(kind, None).unwrap().evaluate(&inputs),
                Ok(expected),
                "{kind}"
            );
        }
        assert!(cost("Dollars", None).unwrap_err().contains("not one of"));
        assert!(cost("CEL", None).unwrap_err().contains("needs a cel"));
        assert!(cost("TotalToken", Some("1u"))
            .unwrap_err()
            .contains("needs type CEL"));
    }

    #[test]
    fn cel_prices_in_micro_dollars() {
        // Sonnet-like list prices per million tokens: $3 in, $15 out, $0.30 cache reads, $3.75 writes;
        // per token that is micro-dollars 3, 15, 0.3, 3.75.
        let formula = "input_tokens * 3u + output_tokens * 15u + uint(double(cached_input_tokens) * 0.3) + uint(double(cache_creation_input_tokens) * 3.75) - cached_input_tokens * 3u - cache_creation_input_tokens * 3u";
        // 1110*3 + 40*15 + 300 + 37 - 3000 - 30 = 3330 + 600 + 300 + 37 - 3030 = 1237
        assert_eq!(evaluate(formula, &USAGE, "m"), Ok(1237));
        assert_eq!(
            evaluate(
                "model.startsWith('us.anthropic.') ? output_tokens * 15u : output_tokens",
                &USAGE,
                "us.anthropic.claude"
            ),
            Ok(600)
        );
        assert_eq!(evaluate("model in ['a', 'b'] ? 1 : 2", &USAGE, "b"), Ok(1));
        assert_eq!(
            evaluate("(input_tokens + 10u) / 3u % 7u", &USAGE, "m"),
            Ok(2)
        );
        assert_eq!(evaluate("-1 + 3", &USAGE, "m"), Ok(2));
        assert_eq!(evaluate("size(backend) + 0", &USAGE, "m"), Ok(17));
        assert_eq!(
            evaluate(
                "backend == \"bedrock-us-east-1\" && !false ? 5u : 0u",
                &USAGE,
                "m"
            ),
            Ok(5)
        );
    }

    #[test]
    fn cel_is_checked_as_cel_checks_it_when_the_configuration_loads() {
        for (source, reason) in [
            ("input_tokens * 2", "converts nothing implicitly"),
            ("input_tokens * 0.5", "converts nothing implicitly"),
            ("double(input_tokens) * 0.5", "must be an int or a uint"),
            ("model", "must be an int or a uint"),
            ("input_tokens > 5u", "must be an int or a uint"),
            ("tokens", "unknown variable"),
            ("route_name == 'r' ? 1 : 2", "not available"),
            ("max(1, 2)", "not supported"),
            ("model.matches('x') ? 1 : 2", "not supported"),
            ("1 +", "ends too early"),
            ("(1", "expected `)`"),
            ("1 2", "after the expression"),
            ("'open", "not closed"),
            ("1 ? 2 : 3", "must be a bool"),
            ("true ? 1 : 2u", "branches"),
            ("99999999999999999999", "out of range"),
            ("1 # 2", "unexpected character"),
        ] {
            let error = cost("CEL", Some(source)).unwrap_err();
            assert!(error.contains(reason), "{source}: {error}");
        }
    }

    #[test]
    fn arithmetic_errors_are_errors_not_wrapped_numbers() {
        for (source, reason) in [
            ("output_tokens - input_tokens", "overflows"),
            ("input_tokens / (output_tokens - 40u)", "overflows"),
            ("18446744073709551615u + output_tokens", "overflows"),
            ("int(output_tokens) - 100", "negative"),
            ("uint(-1)", "out of range"),
            ("uint(double(input_tokens) * 1e30)", "out of range"),
        ] {
            let error = evaluate(source, &USAGE, "m").unwrap_err();
            assert!(error.contains(reason), "{source}: {error}");
        }
    }

    #[test]
    fn metadata_keys_are_checked_and_interned() {
        let a = cost("TotalToken", None).unwrap();
        let b = cost("OutputToken", None).unwrap();
        assert!(std::ptr::eq(a.metadata_key, b.metadata_key));
        let bad = RequestCost::parse(RawRequestCost {
            metadata_key: "a:b".into(),
            kind: "TotalToken".into(),
            cel: None,
        });
        assert!(bad.unwrap_err().contains("metadata_key"));
    }
}
