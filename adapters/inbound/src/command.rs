//! Reading one SMTP command line. Total: any bytes give a [`Command`] (fuzzed).

/// One command, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO name`.
    Ehlo(String),
    /// `HELO name`.
    Helo(String),
    /// `MAIL FROM:<address>` (empty for bounces) with its declared `SIZE`.
    Mail {
        /// The reverse path, without angle brackets.
        from: String,
        /// The `SIZE=` parameter.
        size: Option<u64>,
    },
    /// `RCPT TO:<address>`.
    Rcpt(String),
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY` (never answered truthfully).
    Vrfy,
    /// `HELP`.
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH` (not offered).
    Auth,
    /// `BDAT` (not offered).
    Bdat,
    /// A known command with bad arguments: what is wrong.
    Syntax(&'static str),
    /// A `MAIL` or `RCPT` parameter this server does not offer (RFC 5321 §4.1.1.11: 555).
    Parameter(&'static str),
    /// Anything else.
    Unknown,
}

/// The longest address taken (RFC 5321 §4.5.3.1: 64 + 1 + 255).
const MAX_ADDRESS: usize = 320;

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads `<address>` and what follows it, after `FROM:` or `TO:`.
fn path(rest: &str) -> Result<(String, &str), &'static str> {
    let rest = rest.trim_start();
    let inner = rest.strip_prefix('<').ok_or("the address must be in angle brackets")?;
    let end = inner.find('>').ok_or("the address must be in angle brackets")?;
    let addr = &inner[..end];
    if addr.len() > MAX_ADDRESS {
        return Err("the address is too long");
    }
    if addr.chars().any(|c| c.is_control() || c.is_whitespace() || c == '<') {
        return Err("the address holds white space or control characters");
    }
    // A source route (`@a,@b:user@host`) is read as the mailbox after it (RFC 5321 §4.1.2).
    let addr = match addr.strip_prefix('@') {
        Some(_) => addr.rsplit_once(':').map_or(addr, |(_, m)| m),
        None => addr,
    };
    Ok((addr.to_string(), &inner[end + 1..]))
}

/// Reads one command line (with or without its line break).
pub fn parse_command(line: &[u8]) -> Command {
    let Ok(line) = std::str::from_utf8(strip_eol(line)) else { return Command::Syntax("the line is not UTF-8") };
    let (verb, rest) = match line.split_once(' ') {
        Some((v, r)) => (v, r),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    match verb.as_str() {
        "EHLO" | "HELO" => {
            let name = rest.trim();
            if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
                return Command::Syntax("EHLO needs the client's name");
            }
            let name = name.split_whitespace().next().unwrap_or_default().to_string();
            if verb == "EHLO" { Command::Ehlo(name) } else { Command::Helo(name) }
        }
        "MAIL" => {
            let Some(rest) = strip_keyword(rest, "FROM:") else { return Command::Syntax("MAIL FROM:<address>") };
            let (from, params) = match path(rest) {
                Ok(x) => x,
                Err(e) => return Command::Syntax(e),
            };
            let mut size = None;
            for p in params.split_whitespace() {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                match k.to_ascii_uppercase().as_str() {
                    // RFC 1870 allows up to 20 digits, more than a u64 holds: a size too large
                    // to hold is over any limit (552 at the session, as RFC 1870 §6 says),
                    // not a syntax error.
                    "SIZE" if !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => {
                        size = Some(v.parse::<u64>().unwrap_or(u64::MAX));
                    }
                    "SIZE" => return Command::Syntax("SIZE takes a number"),
                    "BODY" if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                    "SMTPUTF8" if v.is_empty() => {}
                    _ => return Command::Parameter("MAIL FROM parameter not recognized or not offered"),
                }
            }
            if !from.is_empty() && !from.contains('@') {
                return Command::Syntax("the sender needs a domain");
            }
            Command::Mail { from, size }
        }
        "RCPT" => {
            let Some(rest) = strip_keyword(rest, "TO:") else { return Command::Syntax("RCPT TO:<address>") };
            match path(rest) {
                Ok((to, params)) if params.trim().is_empty() => {
                    if to.eq_ignore_ascii_case("postmaster") || to.contains('@') {
                        Command::Rcpt(to)
                    } else {
                        Command::Syntax("the recipient needs a domain")
                    }
                }
                Ok(_) => Command::Parameter("RCPT TO parameters are not offered here"),
                Err(e) => Command::Syntax(e),
            }
        }
        "DATA" if rest.trim().is_empty() => Command::Data,
        "DATA" => Command::Syntax("DATA takes no arguments"),
        "RSET" => Command::Rset,
        "NOOP" => Command::Noop,
        "QUIT" => Command::Quit,
        "VRFY" | "EXPN" => Command::Vrfy,
        "HELP" => Command::Help,
        "STARTTLS" if rest.trim().is_empty() => Command::StartTls,
        "STARTTLS" => Command::Syntax("STARTTLS takes no arguments"),
        "AUTH" => Command::Auth,
        "BDAT" => Command::Bdat,
        _ => Command::Unknown,
    }
}

/// `rest` after `keyword` (ASCII case ignored, spaces before it allowed).
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let rest = rest.trim_start();
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword).then(|| &rest[keyword.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands_are_read() {
        assert_eq!(parse_command(b"EHLO client.test\r\n"), Command::Ehlo("client.test".into()));
        assert_eq!(
            parse_command(b"mail from:<a@b.test> SIZE=1000 BODY=8BITMIME\r\n"),
            Command::Mail { from: "a@b.test".into(), size: Some(1000) }
        );
        assert_eq!(parse_command(b"MAIL FROM:<>\r\n"), Command::Mail { from: String::new(), size: None });
        assert_eq!(
            parse_command("MAIL FROM:<jörg@bücher.test> SMTPUTF8\r\n".as_bytes()),
            Command::Mail { from: "jörg@bücher.test".into(), size: None }
        );
        assert_eq!(parse_command(b"RCPT TO:<@relay.test:x@in.test>\r\n"), Command::Rcpt("x@in.test".into()));
        assert_eq!(parse_command(b"RCPT TO: <x@in.test>\n"), Command::Rcpt("x@in.test".into()));
        assert_eq!(parse_command(b"RCPT TO:<Postmaster>\r\n"), Command::Rcpt("Postmaster".into()));
        assert!(matches!(parse_command(b"RCPT TO:x@in.test\r\n"), Command::Syntax(_)));
        assert!(matches!(parse_command(b"RCPT TO:<x in@in.test>\r\n"), Command::Syntax(_)));
        assert!(matches!(parse_command(b"MAIL FROM:<a@b.test> XFORWARD=1\r\n"), Command::Parameter(_)));
        assert!(matches!(parse_command(b"MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n"), Command::Parameter(_)));
        assert!(matches!(parse_command(b"RCPT TO:<a@in.test> NOTIFY=NEVER\r\n"), Command::Parameter(_)));
        // A declared size too large for a u64 is still a size (over any limit), not bad syntax.
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b.test> SIZE=99999999999999999999\r\n"),
            Command::Mail { from: "a@b.test".into(), size: Some(u64::MAX) }
        );
        for bad in [&b"SIZE=-1"[..], b"SIZE=", b"SIZE=+5", b"SIZE=123456789012345678901", b"SIZE=1e9"] {
            let line = [&b"MAIL FROM:<a@b.test> "[..], bad, b"\r\n"].concat();
            assert_eq!(parse_command(&line), Command::Syntax("SIZE takes a number"), "{bad:?}");
        }
        assert!(matches!(parse_command(b"EHLO\r\n"), Command::Syntax(_)));
        assert_eq!(parse_command(b"data\r\n"), Command::Data);
        assert_eq!(parse_command(b"STARTTLS\r\n"), Command::StartTls);
        assert_eq!(parse_command(b"\xff\xfe\r\n"), Command::Syntax("the line is not UTF-8"));
        assert_eq!(parse_command(b"GET / HTTP/1.1\r\n"), Command::Unknown);
    }

    proptest! {
        /// Total, and an address taken never holds white space, controls or brackets.
        #[test]
        fn any_line_reads(line in proptest::collection::vec(any::<u8>(), 0..400)) {
            match parse_command(&line) {
                Command::Rcpt(a) | Command::Mail { from: a, .. } => {
                    prop_assert!(a.len() <= MAX_ADDRESS);
                    prop_assert!(!a.chars().any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>'));
                }
                _ => {}
            }
        }
    }
}
