//! The management protocol: one JSON object per line each way over a Unix stream socket.
//!
//! ```text
//! → {"id": 7, "op": "create-vpc-endpoint", "args": {"VpcId": "vpc-1", ...}}
//! ← {"id": 7, "ok": {...}}
//! ← {"id": 7, "error": {"code": "InvalidVpcId.NotFound", "message": "..."}}
//! ```
//!
//! This module owns the wire form only: decoding a request line (strictly: unknown keys are
//! errors), encoding a response line, and the error codes the transport itself produces
//! ([`codes`]). It never interprets `args`; the handler behind the server does. The decoder
//! is total: any byte string yields a [`Request`] or an error, never a panic (see
//! [`decode_any`], the fuzz entry point).

use serde_json::{Map, Value};

/// The error codes the protocol layer and the server produce. Operation errors use the EC2
/// names (`InvalidVpcId.NotFound`, …) and come from the handler.
pub mod codes {
    /// The line is not valid UTF-8 JSON.
    pub const MALFORMED_REQUEST: &str = "MalformedRequest";
    /// The line is JSON but not a request: not an object, `op` missing or not a string,
    /// `id` neither a number nor a string, `args` not an object, or an unknown key.
    pub const INVALID_PARAMETER_VALUE: &str = "InvalidParameterValue";
    /// The line is longer than the server's limit; the server closes the connection.
    pub const REQUEST_TOO_LARGE: &str = "RequestTooLarge";
    /// The server already serves its maximum number of clients; it closes the connection.
    pub const TOO_MANY_CLIENTS: &str = "TooManyClients";
    /// The peer's credentials could not be read; the server closes the connection.
    pub const AUTH_FAILURE: &str = "AuthFailure";
    /// A line was started but not finished within the request timeout; the server closes
    /// the connection.
    pub const REQUEST_TIMEOUT: &str = "RequestTimeout";
    /// The handler failed unexpectedly (panicked); nothing is known to have changed.
    pub const INTERNAL_ERROR: &str = "InternalError";
    /// The operation is not one this server offers.
    pub const INVALID_ACTION: &str = "InvalidAction";
}

/// The `error` member of a response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiErrorBody {
    /// EC2-style code, e.g. `InvalidVpcId.NotFound`; stable, for programs.
    pub code: String,
    /// Human explanation; may change between versions.
    pub message: String,
}

impl ApiErrorBody {
    /// An error with this code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiErrorBody {}

/// A decoded request line.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed back in the response: a number or a string, or `null` when the client sent
    /// none.
    pub id: Value,
    /// The operation, e.g. `describe-vpc-endpoints`.
    pub op: String,
    /// The arguments, always an object (`{}` when the client sent none).
    pub args: Value,
}

/// Why a line is not a request: the id to answer with (`null` when it could not be read)
/// and the error to send.
pub type DecodeError = (Value, ApiErrorBody);

impl Request {
    /// A request with these parts; `args` should be an object.
    pub fn new(id: impl Into<Value>, op: &str, args: Value) -> Self {
        Self {
            id: id.into(),
            op: op.to_owned(),
            args,
        }
    }

    /// Decodes one line (without or with its trailing newline). Strict: `op` is required
    /// and must be a string, `id` (optional) a number or string, `args` (optional) an
    /// object, and no other key may appear.
    pub fn parse_line(line: &str) -> Result<Request, DecodeError> {
        let value: Value = parse_strict(line).map_err(|e| {
            (
                Value::Null,
                ApiErrorBody::new(
                    codes::MALFORMED_REQUEST,
                    format!("request is not valid JSON: {e}"),
                ),
            )
        })?;
        let Value::Object(mut obj) = value else {
            return Err((
                Value::Null,
                invalid("request must be a JSON object with \"op\""),
            ));
        };
        // Read the id first so every later error can echo it.
        let id = match obj.remove("id") {
            None | Some(Value::Null) => Value::Null,
            Some(id @ (Value::Number(_) | Value::String(_))) => id,
            Some(_) => {
                return Err((Value::Null, invalid("\"id\" must be a number or a string")));
            }
        };
        let op = match obj.remove("op") {
            Some(Value::String(op)) if !op.is_empty() => op,
            Some(Value::String(_)) => return Err((id, invalid("\"op\" must not be empty"))),
            Some(_) => return Err((id, invalid("\"op\" must be a string"))),
            None => return Err((id, invalid("request has no \"op\""))),
        };
        let args = match obj.remove("args") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(args @ Value::Object(_)) => args,
            Some(_) => return Err((id, invalid("\"args\" must be a JSON object"))),
        };
        if let Some(key) = obj.keys().next() {
            let message = format!("unknown request key {key:?} (expected id, op, args)");
            return Err((id, invalid(message)));
        }
        Ok(Request { id, op, args })
    }

    /// The request as one line, without the newline.
    pub fn to_line(&self) -> String {
        // Written by hand so the keys keep this order (serde_json's map sorts them).
        format!(
            "{{\"id\":{},\"op\":{},\"args\":{}}}",
            self.id,
            Value::String(self.op.clone()),
            self.args
        )
    }
}

/// Parses JSON like `serde_json::from_str`, but refuses an object with the same key twice
/// anywhere in the document (serde_json keeps the last, so `{"op":"describe-…","op":
/// "delete-…"}` would run the second op while a reader of the line sees the first).
pub fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A JSON value with no duplicate keys (see [`parse_strict`]).
struct Strict;

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            let v = map.next_value_seed(Strict)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

fn invalid(message: impl Into<String>) -> ApiErrorBody {
    ApiErrorBody::new(codes::INVALID_PARAMETER_VALUE, message)
}

/// Whether `op` only reads (describe-…, stats, flows, version). Everything else may change
/// state, and the server logs it.
pub fn is_read_only(op: &str) -> bool {
    op.starts_with("describe-") || matches!(op, "stats" | "flows" | "version" | SUBSCRIBE_EVENTS)
}

/// The operation that turns a connection into a stream of events (see
/// [`crate::events`]): answered once with `{"Subscribed": true}`, then one line
/// `{"Event": {...}}` per event until the client closes the connection.
pub const SUBSCRIBE_EVENTS: &str = "subscribe-events";

/// A response line.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The request's id, or `null` when it could not be read.
    pub id: Value,
    /// `ok` or `error`.
    pub result: Result<Value, ApiErrorBody>,
}

impl Response {
    /// A success.
    pub fn ok(id: Value, value: Value) -> Self {
        Self {
            id,
            result: Ok(value),
        }
    }

    /// A failure.
    pub fn error(id: Value, error: ApiErrorBody) -> Self {
        Self {
            id,
            result: Err(error),
        }
    }

    /// The response as one line, without the newline; `id` first, for people reading.
    pub fn to_line(&self) -> String {
        match &self.result {
            Ok(v) => format!("{{\"id\":{},\"ok\":{v}}}", self.id),
            Err(e) => format!(
                "{{\"id\":{},\"error\":{}}}",
                self.id,
                serde_json::json!({"code": e.code, "message": e.message})
            ),
        }
    }

    /// Decodes a response line (the client side). Exactly one of `ok` and `error` must be
    /// present.
    pub fn parse_line(line: &str) -> Result<Response, String> {
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("response is not JSON: {e}"))?;
        let Value::Object(mut obj) = value else {
            return Err("response is not a JSON object".to_owned());
        };
        let id = obj.remove("id").unwrap_or(Value::Null);
        let result = match (obj.remove("ok"), obj.remove("error")) {
            (Some(ok), None) => Ok(ok),
            (None, Some(err)) => Err(serde_json::from_value::<ApiErrorBody>(err)
                .map_err(|e| format!("response has a malformed error: {e}"))?),
            _ => return Err("response must have exactly one of \"ok\" and \"error\"".to_owned()),
        };
        if let Some(key) = obj.keys().next() {
            return Err(format!("response has an unknown key {key:?}"));
        }
        Ok(Response { id, result })
    }
}

/// Decodes arbitrary bytes as a request line: the entry point for fuzzing. Never panics;
/// non-UTF-8 input is `MalformedRequest`.
pub fn decode_any(bytes: &[u8]) -> Result<Request, DecodeError> {
    match std::str::from_utf8(bytes) {
        Ok(line) => Request::parse_line(line),
        Err(e) => Err((
            Value::Null,
            ApiErrorBody::new(
                codes::MALFORMED_REQUEST,
                format!("request is not valid UTF-8: {e}"),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(line: &str) -> (Value, String) {
        let (id, e) = Request::parse_line(line).unwrap_err();
        (id, e.code)
    }

    #[test]
    fn parses_a_full_request() {
        let r = Request::parse_line(
            r#"{"id": 7, "op": "create-vpc-endpoint", "args": {"VpcId": "vpc-1"}}"#,
        )
        .unwrap();
        assert_eq!(r.id, json!(7));
        assert_eq!(r.op, "create-vpc-endpoint");
        assert_eq!(r.args, json!({"VpcId": "vpc-1"}));
    }

    #[test]
    fn args_and_id_are_optional() {
        let r = Request::parse_line(r#"{"op":"version"}"#).unwrap();
        assert_eq!(r.id, Value::Null);
        assert_eq!(r.args, json!({}));
        let r = Request::parse_line(r#"{"id":"a","op":"stats","args":null}"#).unwrap();
        assert_eq!(r.id, json!("a"));
        assert_eq!(r.args, json!({}));
    }

    #[test]
    fn rejects_every_malformed_shape() {
        assert_eq!(code("not json").1, codes::MALFORMED_REQUEST);
        assert_eq!(code("{\"op\": ").1, codes::MALFORMED_REQUEST);
        assert_eq!(code("").1, codes::MALFORMED_REQUEST);
        assert_eq!(code("[1,2]").1, codes::INVALID_PARAMETER_VALUE);
        assert_eq!(code("42").1, codes::INVALID_PARAMETER_VALUE);
        assert_eq!(
            code(r#"{"id":1}"#),
            (json!(1), codes::INVALID_PARAMETER_VALUE.into())
        );
        assert_eq!(
            code(r#"{"id":1,"op":5}"#),
            (json!(1), codes::INVALID_PARAMETER_VALUE.into())
        );
        assert_eq!(
            code(r#"{"id":1,"op":""}"#).1,
            codes::INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            code(r#"{"id":"x","op":"stats","args":[1]}"#),
            (json!("x"), codes::INVALID_PARAMETER_VALUE.into())
        );
        assert_eq!(
            code(r#"{"id":2,"op":"stats","extra":1}"#),
            (json!(2), codes::INVALID_PARAMETER_VALUE.into())
        );
        assert_eq!(
            code(r#"{"id":[1],"op":"stats"}"#).1,
            codes::INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            code(r#"{"id":true,"op":"stats"}"#).1,
            codes::INVALID_PARAMETER_VALUE
        );
    }

    #[test]
    fn duplicate_keys_are_refused_anywhere() {
        for line in [
            r#"{"id":1,"op":"describe-vpc-endpoints","op":"delete-vpc-endpoints"}"#,
            r#"{"id":1,"id":2,"op":"stats"}"#,
            r#"{"op":"delete-vpc-endpoints","args":{"VpcEndpointIds":["vpce-1"],"VpcEndpointIds":[]}}"#,
            r#"{"op":"x","args":{"A":[{"B":1,"B":2}]}}"#,
        ] {
            let (_, e) = Request::parse_line(line).unwrap_err();
            assert_eq!(e.code, codes::MALFORMED_REQUEST, "{line}");
            assert!(e.message.contains("appears twice"), "{line}: {e}");
        }
        // Equal keys in different objects are fine.
        let ok = Request::parse_line(r#"{"op":"x","args":{"A":{"Id":1},"B":{"Id":2}}}"#);
        assert!(ok.is_ok());
        assert_eq!(
            parse_strict(r#"{"a":[1,-2,3.5,"s",null,true,{"b":{}}]}"#).unwrap(),
            json!({"a":[1,-2,3.5,"s",null,true,{"b":{}}]})
        );
    }

    #[test]
    fn request_round_trips() {
        let r = Request::new(
            3,
            "describe-vpc-endpoints",
            json!({"VpcEndpointIds": ["vpce-1"]}),
        );
        assert_eq!(Request::parse_line(&r.to_line()).unwrap(), r);
    }

    #[test]
    fn response_round_trips() {
        let ok = Response::ok(json!(1), json!({"Return": true}));
        assert_eq!(ok.to_line(), r#"{"id":1,"ok":{"Return":true}}"#);
        assert_eq!(Response::parse_line(&ok.to_line()).unwrap(), ok);
        let err = Response::error(
            json!("q"),
            ApiErrorBody::new("InvalidVpcId.NotFound", "no vpc-9"),
        );
        assert_eq!(
            err.to_line(),
            r#"{"id":"q","error":{"code":"InvalidVpcId.NotFound","message":"no vpc-9"}}"#
        );
        assert_eq!(Response::parse_line(&err.to_line()).unwrap(), err);
        assert!(Response::parse_line(r#"{"id":1}"#).is_err());
        assert!(
            Response::parse_line(r#"{"id":1,"ok":1,"error":{"code":"a","message":"b"}}"#).is_err()
        );
    }

    #[test]
    fn read_only_ops() {
        assert!(is_read_only("describe-vpc-endpoints"));
        assert!(is_read_only("stats"));
        assert!(!is_read_only("create-vpc-endpoint"));
        assert!(!is_read_only("register-targets"));
    }

    /// xorshift64*: a seeded generator, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }
    }

    /// Fuzz-style: random bytes, random JSON-ish token soup, and mutations of a valid
    /// request never panic the decoder, and whatever decodes re-encodes to itself.
    #[test]
    fn arbitrary_bytes_never_panic() {
        const TOKENS: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"id\"",
            "\"op\"",
            "\"args\"",
            "\"x\"",
            "1",
            "-0",
            "1e999",
            "null",
            "true",
            "\"\\u0000\"",
            "\"\\ud800\"",
            " ",
            "\n",
            "\"stats\"",
        ];
        let valid = br#"{"id": 7, "op": "create-vpc-endpoint", "args": {"VpcId": "vpc-1"}}"#;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..20_000 {
            let bytes: Vec<u8> = match round % 3 {
                0 => (0..rng.below(64))
                    .map(|_| rng.next().to_le_bytes()[0])
                    .collect(),
                1 => (0..rng.below(24))
                    .flat_map(|_| TOKENS[rng.below(TOKENS.len())].bytes())
                    .collect(),
                _ => {
                    let mut v = valid.to_vec();
                    for _ in 0..=rng.below(4) {
                        let i = rng.below(v.len());
                        v[i] = rng.next().to_le_bytes()[0];
                    }
                    v
                }
            };
            if let Ok(req) = decode_any(&bytes) {
                assert_eq!(Request::parse_line(&req.to_line()).unwrap(), req);
            }
        }
        // Deep nesting hits serde_json's recursion limit, not the stack.
        let deep = format!(
            "{{\"op\":\"x\",\"args\":{{\"a\":{}{}}}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(decode_any(deep.as_bytes()).is_err());
    }
}
