//! `XADD` (API.md "Redis-protocol ingest"): its options in any order, as
//! Redis accepts them, and the event object its field/value pairs become.
//! `MAXLEN`/`MINID`/`LIMIT`/`NOMKSTREAM` are accepted and ignored; `IDMP`
//! names the producer and idempotency id; the entry id must be `*`.

use bytes::Bytes;

use super::codec::Reply;
use crate::domain::original::event_object;

/// A parsed `XADD`.
#[derive(Debug, PartialEq)]
pub struct Xadd {
    pub stream: Bytes,
    /// `IDMP <producer> <iid>`.
    pub idmp: Option<(String, String)>,
    /// The event as a JSON object with string values, in field order.
    pub event: String,
}

fn err(message: impl Into<String>) -> Reply {
    Reply::Error(message.into())
}

fn arity() -> Reply {
    err("ERR wrong number of arguments for 'xadd' command")
}

fn syntax() -> Reply {
    err("ERR syntax error")
}

/// Whether `arg` looks like an explicit stream entry id (`123`, `123-4`,
/// `123-*`).
fn is_entry_id(arg: &[u8]) -> bool {
    let (ms, seq) = match arg.iter().position(|&b| b == b'-') {
        Some(i) => (&arg[..i], Some(&arg[i + 1..])),
        None => (arg, None),
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    digits(ms) && seq.is_none_or(|s| s == b"*" || digits(s))
}

fn text(arg: &Bytes, what: &str) -> Result<String, Reply> {
    std::str::from_utf8(arg)
        .map(str::to_string)
        .map_err(|_| err(format!("ERR bad_request: {what} must be UTF-8")))
}

/// Parses `XADD <stream> [options] * <field> <value> ...`.
pub fn parse(args: &[Bytes]) -> Result<Xadd, Reply> {
    let Some(stream) = args.get(1).cloned() else {
        return Err(arity());
    };
    let mut idmp = None;
    let mut i = 2;
    loop {
        let Some(arg) = args.get(i) else {
            return Err(arity());
        };
        let upper = arg.to_ascii_uppercase();
        match upper.as_slice() {
            b"*" => {
                i += 1;
                break;
            }
            b"NOMKSTREAM" | b"KEEPREF" | b"DELREF" | b"ACKED" => i += 1,
            b"IDMP" => {
                let (Some(producer), Some(iid)) = (args.get(i + 1), args.get(i + 2)) else {
                    return Err(syntax());
                };
                if producer.is_empty() || iid.is_empty() {
                    return Err(err(
                        "ERR bad_request: IDMP producer and iid must not be empty",
                    ));
                }
                idmp = Some((
                    text(producer, "the IDMP producer")?,
                    text(iid, "the IDMP iid")?,
                ));
                i += 3;
            }
            b"MAXLEN" | b"MINID" => {
                i += 1;
                if matches!(args.get(i).map(|a| a.as_ref()), Some(b"=" | b"~")) {
                    i += 1;
                }
                let Some(threshold) = args.get(i) else {
                    return Err(syntax());
                };
                let numeric = if upper.as_slice() == b"MAXLEN" {
                    std::str::from_utf8(threshold).is_ok_and(|t| t.parse::<u64>().is_ok())
                } else {
                    is_entry_id(threshold)
                };
                if !numeric {
                    return Err(err("ERR value is not an integer or out of range"));
                }
                i += 1;
            }
            b"LIMIT" => {
                let count = args.get(i + 1).and_then(|c| std::str::from_utf8(c).ok());
                if count.is_none_or(|c| c.parse::<u64>().is_err()) {
                    return Err(err("ERR value is not an integer or out of range"));
                }
                i += 2;
            }
            _ if is_entry_id(arg) => return Err(err("ERR varcade assigns entry ids: use *")),
            _ => return Err(syntax()),
        }
    }
    let pairs = &args[i..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(arity());
    }
    let mut fields: Vec<(String, String)> = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks_exact(2) {
        fields.push((
            text(&pair[0], "field names")?,
            text(&pair[1], "field values")?,
        ));
    }
    Ok(Xadd {
        stream,
        idmp,
        event: event_object(&fields),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Xadd, Reply> {
        parse(
            &args
                .iter()
                .map(|a| Bytes::from(a.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn fields_become_one_object_in_order() {
        let x = parse_str(&["xadd", "s", "*", "type", "gameplay", "n", "say \"hi\""]).unwrap();
        assert_eq!(x.stream, Bytes::from("s"));
        assert_eq!(x.event, r#"{"type":"gameplay","n":"say \"hi\""}"#);
        let repeated = parse_str(&["XADD", "s", "*", "a", "1", "b", "2", "a", "3"]).unwrap();
        assert_eq!(
            repeated.event, r#"{"a":"3","b":"2"}"#,
            "the last value wins"
        );
    }

    #[test]
    fn options_in_any_order() {
        let x = parse_str(&[
            "XADD",
            "s",
            "MAXLEN",
            "~",
            "1000",
            "LIMIT",
            "10",
            "NOMKSTREAM",
            "IDMP",
            "p",
            "7",
            "*",
            "a",
            "1",
        ])
        .unwrap();
        assert_eq!(x.idmp, Some(("p".into(), "7".into())));
        let x = parse_str(&[
            "XADD", "s", "IDMP", "p", "8", "MINID", "=", "5-0", "*", "a", "1",
        ])
        .unwrap();
        assert_eq!(x.idmp, Some(("p".into(), "8".into())));
    }

    #[test]
    fn refusals() {
        let reply = |args: &[&str]| match parse_str(args) {
            Err(Reply::Error(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reply(&["XADD", "s", "1-1", "a", "1"]),
            "ERR varcade assigns entry ids: use *"
        );
        assert_eq!(
            reply(&["XADD", "s", "17", "a", "1"]),
            "ERR varcade assigns entry ids: use *"
        );
        assert!(reply(&["XADD", "s", "*", "a"]).contains("wrong number of arguments"));
        assert!(reply(&["XADD", "s", "*"]).contains("wrong number of arguments"));
        assert!(reply(&["XADD", "s"]).contains("wrong number of arguments"));
        assert_eq!(
            reply(&["XADD", "s", "BOGUS", "*", "a", "1"]),
            "ERR syntax error"
        );
        assert!(reply(&["XADD", "s", "MAXLEN", "x", "*", "a", "1"]).contains("integer"));
        assert_eq!(reply(&["XADD", "s", "IDMP", "p"]), "ERR syntax error");
    }
}
