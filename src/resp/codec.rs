//! The wire format (API.md "Redis-protocol ingest"): commands in, replies
//! out. Decoding and encoding are the `redis-protocol` crate's; what is
//! ours is the guard that enforces the limits (a bulk string over 1 MiB,
//! more than 1,024 arguments) from the length headers alone, before a
//! command is buffered whole, and the one reply type encoded as RESP2 or
//! RESP3 as the connection negotiated.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::{BytesFrame, OwnedFrame as Resp2, Resp2Frame};
use redis_protocol::resp3::types::{FrameMap, OwnedFrame as Resp3, Resp3Frame};

/// Largest bulk string (argument) accepted.
pub const MAX_BULK: usize = 1 << 20;
/// Most arguments (command name included) accepted in one command.
pub const MAX_ARGS: usize = 1024;
/// Largest command accepted, all arguments together.
pub const MAX_COMMAND: usize = 4 << 20;
/// Longest header line (`*<n>` or `$<len>`) a client may send.
const MAX_LINE: usize = 32;

/// Bytes that are not an acceptable command; the connection is closed
/// after the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn protocol(message: impl Into<String>) -> ProtocolError {
    ProtocolError(message.into())
}

/// Reads the integer of a header line starting at `at` (after its type
/// byte): `Ok(None)` while the line is incomplete.
fn header(buf: &[u8], at: usize, what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = buf.get(at..).unwrap_or_default();
    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
        if rest.len() > MAX_LINE {
            return Err(protocol(format!("invalid {what} length")));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&rest[..end]).ok();
    let n = text
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| protocol(format!("invalid {what} length")))?;
    Ok(Some((n, at + end + 2)))
}

/// Checks the command at the start of `buf` against the limits from its
/// headers; returns its length once it is complete, `None` before.
fn complete_length(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        return Err(protocol(format!(
            "expected '*', got '{}'",
            (first as char).escape_default()
        )));
    }
    let Some((count, mut at)) = header(buf, 1, "multibulk")? else {
        return Ok(None);
    };
    if count > MAX_ARGS as i64 {
        return Err(protocol(format!(
            "{count} arguments in one command, at most {MAX_ARGS}"
        )));
    }
    let mut declared = 0usize;
    for _ in 0..count.max(0) {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&other) => {
                return Err(protocol(format!(
                    "expected '$', got '{}'",
                    (other as char).escape_default()
                )));
            }
        }
        let Some((len, next)) = header(buf, at + 1, "bulk")? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| protocol("invalid bulk length"))?;
        if len > MAX_BULK {
            return Err(protocol(format!(
                "a bulk string of {len} bytes, at most {MAX_BULK}"
            )));
        }
        declared += len;
        if declared > MAX_COMMAND {
            return Err(protocol(format!(
                "a command of more than {MAX_COMMAND} bytes"
            )));
        }
        at = next + len + 2;
    }
    Ok((buf.len() >= at).then_some(at))
}

/// Takes the next complete command off `buf`: its arguments, `Ok(None)`
/// until one has fully arrived. An empty command (`*0`) has no arguments.
pub fn next_command(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if complete_length(buf)?.is_none() {
        return Ok(None);
    }
    let frame = match decode_bytes_mut(buf) {
        Ok(Some((frame, _, _))) => frame,
        Ok(None) => return Ok(None),
        Err(e) => return Err(protocol(e.details().to_string())),
    };
    match frame {
        BytesFrame::Array(items) => items
            .into_iter()
            .map(|item| match item {
                BytesFrame::BulkString(b) => Ok(b),
                _ => Err(protocol("expected bulk strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        BytesFrame::Null => Ok(Some(Vec::new())),
        _ => Err(protocol("expected an array of bulk strings")),
    }
}

/// A reply, encoded per the connection's protocol version.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(&'static str),
    Error(String),
    Bulk(Vec<u8>),
    Int(i64),
    Null,
    Array(Vec<Reply>),
    /// A map in RESP3; a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK")
    }

    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(s.into().into_bytes())
    }

    fn resp2(self) -> Resp2 {
        match self {
            Reply::Simple(s) => Resp2::SimpleString(s.as_bytes().to_vec()),
            Reply::Error(e) => Resp2::Error(e),
            Reply::Bulk(b) => Resp2::BulkString(b),
            Reply::Int(i) => Resp2::Integer(i),
            Reply::Null => Resp2::Null,
            Reply::Array(items) => Resp2::Array(items.into_iter().map(Reply::resp2).collect()),
            Reply::Map(pairs) => Resp2::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [k.resp2(), v.resp2()])
                    .collect(),
            ),
        }
    }

    fn resp3(self) -> Resp3 {
        match self {
            Reply::Simple(s) => Resp3::SimpleString {
                data: s.as_bytes().to_vec(),
                attributes: None,
            },
            Reply::Error(e) => Resp3::SimpleError {
                data: e,
                attributes: None,
            },
            Reply::Bulk(b) => Resp3::BlobString {
                data: b,
                attributes: None,
            },
            Reply::Int(i) => Resp3::Number {
                data: i,
                attributes: None,
            },
            Reply::Null => Resp3::Null,
            Reply::Array(items) => Resp3::Array {
                data: items.into_iter().map(Reply::resp3).collect(),
                attributes: None,
            },
            Reply::Map(pairs) => Resp3::Map {
                data: pairs
                    .into_iter()
                    .map(|(k, v)| (k.resp3(), v.resp3()))
                    .collect::<FrameMap<_, _>>(),
                attributes: None,
            },
        }
    }

    /// Appends the reply to `buf` in protocol version `proto` (2 or 3).
    pub fn encode(self, proto: u8, buf: &mut BytesMut) {
        let start = buf.len();
        let written = if proto >= 3 {
            let frame = self.resp3();
            buf.resize(start + frame.encode_len(false), 0);
            redis_protocol::resp3::encode::complete::encode(&mut buf[start..], &frame, false)
        } else {
            let frame = self.resp2();
            buf.resize(start + frame.encode_len(false), 0);
            redis_protocol::resp2::encode::encode(&mut buf[start..], &frame, false)
        };
        match written {
            Ok(n) => buf.truncate(start + n),
            Err(e) => {
                buf.truncate(start);
                tracing::error!(error = %e, "cannot encode a reply");
                buf.extend_from_slice(b"-ERR internal: cannot encode the reply\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(bytes: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(args) = next_command(&mut buf)? {
            out.push(args);
        }
        Ok(out)
    }

    #[test]
    fn pipelined_commands_and_partial_input() {
        let two = b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n";
        let got = commands(two).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], [Bytes::from("ECHO"), Bytes::from("hi")]);
        for cut in 1..two.len() {
            let mut buf = BytesMut::from(&two[..cut]);
            let mut seen = 0;
            while next_command(&mut buf).unwrap().is_some() {
                seen += 1;
            }
            assert!(seen <= 1, "cut at {cut}");
        }
    }

    #[test]
    fn limits_are_enforced_from_the_headers() {
        let err = commands(b"*100000\r\n").unwrap_err();
        assert!(err.to_string().contains("at most 1024"), "{err}");
        let err = commands(b"*2\r\n$4\r\nECHO\r\n$2097152\r\nabc").unwrap_err();
        assert!(err.to_string().contains("bulk string"), "{err}");
        let mut big = b"*5\r\n$4\r\nXADD\r\n".to_vec();
        for _ in 0..4 {
            big.extend_from_slice(format!("${MAX_BULK}\r\n").as_bytes());
            big.extend(std::iter::repeat_n(b'x', MAX_BULK));
            big.extend_from_slice(b"\r\n");
        }
        let err = commands(&big).unwrap_err();
        assert!(err.to_string().contains("command of more than"), "{err}");
    }

    #[test]
    fn bytes_that_are_not_resp_are_refused() {
        assert!(commands(b"GET x\r\n").is_err());
        assert!(commands(b"*abc\r\n").is_err());
        assert!(commands(b"*1\r\n:12\r\n").is_err());
        assert!(commands(b"*1\r\n$3\r\nabcde\r\n").is_err());
        assert!(commands(&[b'*'; 40]).is_err(), "an endless header line");
    }

    #[test]
    fn replies_in_both_protocols() {
        let encode = |reply: Reply, proto| {
            let mut buf = BytesMut::new();
            reply.encode(proto, &mut buf);
            buf
        };
        assert_eq!(&encode(Reply::ok(), 2)[..], b"+OK\r\n");
        assert_eq!(&encode(Reply::text("7-0"), 2)[..], b"$3\r\n7-0\r\n");
        assert_eq!(&encode(Reply::Null, 2)[..], b"$-1\r\n");
        assert_eq!(&encode(Reply::Null, 3)[..], b"_\r\n");
        let map = Reply::Map(vec![(Reply::text("proto"), Reply::Int(3))]);
        assert_eq!(&encode(map.clone(), 3)[..], b"%1\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(&encode(map, 2)[..], b"*2\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(&encode(Reply::Error("ERR x".into()), 3)[..], b"-ERR x\r\n");
    }
}
