//! The commands the listener understands (API.md "Redis-protocol ingest"),
//! parsed from a command's arguments. Names are case-insensitive; the
//! metric label of a command comes from the closed set [`Command::label`].

use bytes::Bytes;

use super::codec::Reply;
use super::xadd::{self, Xadd};

/// One parsed command, or the error reply it earns.
#[derive(Debug, PartialEq)]
pub enum Command {
    Auth {
        password: String,
    },
    Hello {
        proto: Option<u8>,
        password: Option<String>,
        name: Option<Bytes>,
    },
    Ping(Option<Bytes>),
    Echo(Bytes),
    Select,
    Info,
    ClientSetName(Bytes),
    ClientSetInfo,
    ClientGetName,
    ClientId,
    /// `COMMAND` and `COMMAND DOCS`: an empty array.
    CommandDocs,
    Quit,
    Xadd(Box<Xadd>),
}

/// What a command's arguments became.
pub struct Parsed {
    /// The metric label (closed set).
    pub label: &'static str,
    pub command: Result<Command, Reply>,
}

fn err(message: impl Into<String>) -> Reply {
    Reply::Error(message.into())
}

fn arity(name: &str) -> Reply {
    err(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

fn utf8(arg: &Bytes) -> Option<String> {
    std::str::from_utf8(arg).ok().map(str::to_string)
}

impl Command {
    /// Parses a non-empty argument list.
    pub fn parse(args: Vec<Bytes>) -> Parsed {
        let name = String::from_utf8_lossy(&args[0]).into_owned();
        let upper = name.to_ascii_uppercase();
        let n = args.len();
        let (label, command) = match upper.as_str() {
            "AUTH" => ("auth", auth(&args)),
            "HELLO" => ("hello", hello(&args)),
            "PING" if n <= 2 => ("ping", Ok(Command::Ping(args.get(1).cloned()))),
            "ECHO" if n == 2 => ("echo", Ok(Command::Echo(args[1].clone()))),
            "SELECT" if n == 2 => ("select", select(&args[1])),
            "INFO" => ("info", Ok(Command::Info)),
            "CLIENT" => ("client", client(&args)),
            "COMMAND" => ("command", command(&args)),
            "QUIT" => ("quit", Ok(Command::Quit)),
            "XADD" => (
                "xadd",
                xadd::parse(&args).map(|x| Command::Xadd(Box::new(x))),
            ),
            "PING" => ("ping", Err(arity(&name))),
            "ECHO" => ("echo", Err(arity(&name))),
            "SELECT" => ("select", Err(arity(&name))),
            _ => (
                "other",
                Err(err(format!(
                    "ERR unknown command '{}'",
                    name.escape_default()
                ))),
            ),
        };
        Parsed { label, command }
    }
}

fn auth(args: &[Bytes]) -> Result<Command, Reply> {
    let password = match args.len() {
        2 => &args[1],
        3 => &args[2],
        _ => return Err(arity("auth")),
    };
    Ok(Command::Auth {
        password: String::from_utf8_lossy(password).into_owned(),
    })
}

fn hello(args: &[Bytes]) -> Result<Command, Reply> {
    let mut proto = None;
    let mut rest = &args[1..];
    if let Some(version) = rest.first() {
        match utf8(version).and_then(|v| v.parse::<i64>().ok()) {
            Some(v @ 2..=3) => proto = Some(v as u8),
            Some(_) => return Err(err("NOPROTO unsupported protocol version")),
            None => {
                return Err(err(
                    "ERR Protocol version is not an integer or out of range",
                ));
            }
        }
        rest = &rest[1..];
    }
    let (mut password, mut name) = (None, None);
    while let Some(option) = rest.first() {
        match option.to_ascii_uppercase().as_slice() {
            b"AUTH" if rest.len() >= 3 => {
                password = Some(String::from_utf8_lossy(&rest[2]).into_owned());
                rest = &rest[3..];
            }
            b"SETNAME" if rest.len() >= 2 => {
                name = Some(rest[1].clone());
                rest = &rest[2..];
            }
            _ => {
                return Err(err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option).escape_default()
                )));
            }
        }
    }
    Ok(Command::Hello {
        proto,
        password,
        name,
    })
}

fn select(index: &Bytes) -> Result<Command, Reply> {
    match utf8(index).and_then(|i| i.parse::<i64>().ok()) {
        Some(0..=15) => Ok(Command::Select),
        Some(_) => Err(err("ERR DB index is out of range")),
        None => Err(err("ERR value is not an integer or out of range")),
    }
}

fn client(args: &[Bytes]) -> Result<Command, Reply> {
    let Some(sub) = args.get(1) else {
        return Err(arity("client"));
    };
    let upper = sub.to_ascii_uppercase();
    match (upper.as_slice(), args.len()) {
        (b"SETNAME", 3) => Ok(Command::ClientSetName(args[2].clone())),
        (b"SETINFO", 4) => Ok(Command::ClientSetInfo),
        (b"GETNAME", 2) => Ok(Command::ClientGetName),
        (b"ID", 2) => Ok(Command::ClientId),
        (b"SETNAME" | b"SETINFO" | b"GETNAME" | b"ID", _) => Err(err(format!(
            "ERR wrong number of arguments for 'client|{}' command",
            String::from_utf8_lossy(sub).to_ascii_lowercase()
        ))),
        _ => Err(err(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(sub).escape_default()
        ))),
    }
}

fn command(args: &[Bytes]) -> Result<Command, Reply> {
    match args.get(1).map(|a| a.to_ascii_uppercase()) {
        None => Ok(Command::CommandDocs),
        Some(sub) if sub == b"DOCS" => Ok(Command::CommandDocs),
        Some(sub) => Err(err(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&sub).escape_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Parsed {
        Command::parse(args.iter().map(|a| Bytes::from(a.to_string())).collect())
    }

    #[test]
    fn names_are_case_insensitive_and_labelled() {
        let p = parse(&["ping"]);
        assert_eq!((p.label, p.command), ("ping", Ok(Command::Ping(None))));
        let p = parse(&["Select", "1"]);
        assert_eq!(p.command, Ok(Command::Select));
        let p = parse(&["FLUSHALL"]);
        assert_eq!(p.label, "other");
        assert_eq!(
            p.command,
            Err(Reply::Error("ERR unknown command 'FLUSHALL'".into()))
        );
    }

    #[test]
    fn auth_and_hello_forms() {
        let password = |p: Parsed| match p.command {
            Ok(Command::Auth { password }) => password,
            other => panic!("{other:?}"),
        };
        assert_eq!(password(parse(&["AUTH", "k"])), "k");
        assert_eq!(password(parse(&["AUTH", "default", "k"])), "k");
        assert!(parse(&["AUTH"]).command.is_err());
        assert_eq!(
            parse(&["HELLO", "3", "AUTH", "u", "k", "SETNAME", "n"]).command,
            Ok(Command::Hello {
                proto: Some(3),
                password: Some("k".into()),
                name: Some(Bytes::from("n")),
            })
        );
        assert_eq!(
            parse(&["HELLO", "4"]).command,
            Err(Reply::Error("NOPROTO unsupported protocol version".into()))
        );
    }

    #[test]
    fn select_client_and_command() {
        assert!(parse(&["SELECT", "16"]).command.is_err());
        assert!(parse(&["SELECT", "x"]).command.is_err());
        assert_eq!(
            parse(&["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"]).command,
            Ok(Command::ClientSetInfo)
        );
        assert!(parse(&["CLIENT", "KILL"]).command.is_err());
        assert_eq!(
            parse(&["COMMAND", "DOCS"]).command,
            Ok(Command::CommandDocs)
        );
    }
}
