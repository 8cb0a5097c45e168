//! One sd_notify datagram, parsed: newline-separated `KEY=VALUE` assignments (see
//! sd_notify(3)). Pure and bounded: a datagram over `MAX_DATAGRAM` bytes is refused whole,
//! unknown keys are ignored (the protocol grows; `RELOADING=1`, `ERRNO=`, `FDSTORE=1` are
//! not herd's business), and the status text is cut to `MAX_STATUS` bytes with control
//! characters removed, so an app cannot fill `ps` or a terminal with garbage.

/// The largest datagram herd reads (systemd's limit is of the same order: a few KiB of text).
pub const MAX_DATAGRAM: usize = 4096;
/// The longest `STATUS=` text kept, in bytes.
pub const MAX_STATUS: usize = 256;

/// What one datagram says. Every field is independent: one datagram may carry
/// `MAINPID=`, `STATUS=` and `READY=1` together (applied in that order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub ready: bool,
    pub watchdog: bool,
    pub status: Option<String>,
    pub main_pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("datagram of {0} bytes is over the limit of {MAX_DATAGRAM}")]
    TooLong(usize),
    #[error("`MAINPID={0}` is not a process id")]
    BadMainPid(String),
}

impl Message {
    /// Whether the datagram said anything herd acts on.
    pub fn is_empty(&self) -> bool {
        *self == Message::default()
    }
}

/// Parses one datagram.
pub fn parse(datagram: &[u8]) -> Result<Message, Refused> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(Refused::TooLong(datagram.len()));
    }
    let mut m = Message::default();
    for line in datagram.split(|b| *b == b'\n') {
        let Some(eq) = line.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (key, value) = (&line[..eq], &line[eq + 1..]);
        match key {
            b"READY" => m.ready |= value == b"1",
            b"WATCHDOG" => m.watchdog |= value == b"1",
            b"STATUS" => m.status = Some(status_text(value)),
            b"MAINPID" => {
                let text = String::from_utf8_lossy(value);
                // 0 and 1 are never an instance's process (init, or nothing).
                match text.trim().parse::<u32>() {
                    Ok(pid) if pid > 1 && pid <= i32::MAX as u32 => m.main_pid = Some(pid),
                    _ => return Err(Refused::BadMainPid(status_text(value))),
                }
            }
            _ => {}
        }
    }
    Ok(m)
}

/// `STATUS=` as shown to people: valid UTF-8, no control characters, at most `MAX_STATUS`
/// bytes (cut at a character boundary).
pub fn status_text(raw: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
    {
        if out.len() + c.len_utf8() > MAX_STATUS {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_herd_acts_on_are_read_and_others_ignored() {
        let m = parse(b"READY=1\nSTATUS=serving 3 clients\nMAINPID=4242\nWATCHDOG=1\nRELOADING=1\nERRNO=2\nnonsense\n").unwrap();
        assert_eq!(
            m,
            Message {
                ready: true,
                watchdog: true,
                status: Some("serving 3 clients".into()),
                main_pid: Some(4242),
            }
        );
        assert!(parse(b"FDSTORE=1\nX-APP=1").unwrap().is_empty());
        // Only the value 1 means yes; `WATCHDOG=trigger` is not a ping.
        assert!(parse(b"READY=0\nWATCHDOG=trigger").unwrap().is_empty());
    }

    #[test]
    fn an_oversized_datagram_is_refused_whole() {
        let mut big = b"READY=1\nSTATUS=".to_vec();
        big.resize(MAX_DATAGRAM + 1, b'x');
        assert_eq!(parse(&big), Err(Refused::TooLong(MAX_DATAGRAM + 1)));
        big.truncate(MAX_DATAGRAM);
        assert!(parse(&big).unwrap().ready);
    }

    #[test]
    fn status_text_is_bounded_and_has_no_control_characters() {
        let m = parse(b"STATUS=\x1b[31mred\x07 \xff alert\r").unwrap();
        assert_eq!(m.status.as_deref(), Some("[31mred \u{fffd} alert"));
        let long = format!("STATUS={}", "é".repeat(200));
        let s = parse(long.as_bytes()).unwrap().status.unwrap();
        assert!(
            s.len() <= MAX_STATUS && s.len() >= MAX_STATUS - 1,
            "{}",
            s.len()
        );
        assert!(s.chars().all(|c| c == 'é'));
    }

    proptest::proptest! {
        #[test]
        fn any_datagram_parses_or_is_refused_and_its_status_is_bounded(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..MAX_DATAGRAM + 64)
        ) {
            match parse(&bytes) {
                Ok(m) => {
                    let s = m.status.unwrap_or_default();
                    proptest::prop_assert!(s.len() <= MAX_STATUS);
                    proptest::prop_assert!(!s.chars().any(char::is_control));
                }
                Err(Refused::TooLong(n)) => proptest::prop_assert!(n > MAX_DATAGRAM),
                Err(Refused::BadMainPid(_)) => {}
            }
        }
    }

    #[test]
    fn a_main_pid_must_be_a_process_id() {
        for bad in [
            "MAINPID=0",
            "MAINPID=1",
            "MAINPID=-5",
            "MAINPID=abc",
            "MAINPID=4294967295",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(Refused::BadMainPid(_))),
                "{bad}"
            );
        }
        assert_eq!(parse(b"MAINPID= 77 ").unwrap().main_pid, Some(77));
    }
}
