//! A Verifier under test: a child process speaking the line protocol (docs/verifier.md, "The
//! conformance kit and its line protocol") on its stdin and stdout.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

/// How long a Verifier may take to print READY (a JVM starts in about a second).
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long one answer may take: longer than any sane deadline or keepalive of a Verifier's own
/// (a paused server holds a call until one of them gives up).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// How to start one Verifier: a name for the output, and its argv.
#[derive(Clone, Debug)]
pub struct VerifierCommand {
    pub name: String,
    pub argv: Vec<String>,
}

/// One answer to `verify`.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Accept { org_id: String, key_id: String },
    Reject,
    Unavailable,
}

impl Answer {
    pub fn accepted(&self) -> bool {
        matches!(self, Answer::Accept { .. })
    }
}

/// The answer to `stats` (the fields the protocol requires).
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub cached_keys: u64,
    pub applied_sequence: Option<u64>,
    pub store_id: Option<String>,
    pub connected: bool,
    pub fresh: bool,
    pub flushes: u64,
}

/// What the Verifier is configured with (the protocol's environment).
#[derive(Clone, Debug)]
pub struct Settings {
    pub urls: Vec<String>,
    pub token: String,
    pub max_staleness: Duration,
    pub max_clock_skew: Duration,
}

pub struct LineVerifier {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The child's stderr, kept in a file so a failure can show it.
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl LineVerifier {
    /// Starts `command` configured by `settings` and waits for its READY.
    pub async fn start(command: &VerifierCommand, settings: &Settings) -> LineVerifier {
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("verifier.log");
        let mut child = Command::new(&command.argv[0])
            .args(&command.argv[1..])
            .env("ZSC_URLS", settings.urls.join(","))
            .env("ZSC_TOKEN", &settings.token)
            .env_remove("ZSC_TLS_CA")
            .env("ZSC_MAX_STALENESS_MS", ms(settings.max_staleness))
            .env("ZSC_MAX_CLOCK_SKEW_MS", ms(settings.max_clock_skew))
            .env("ZSC_CACHE_CAPACITY", "1000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.argv));
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut verifier = LineVerifier {
            name: command.name.clone(),
            child,
            stdin,
            stdout,
            log,
            _log_dir: log_dir,
        };
        let first = verifier.read_line(READY_WITHIN).await;
        assert_eq!(first, "READY", "{}", verifier.context());
        verifier
    }

    /// The child's name and the end of its stderr, for a failure message.
    pub fn context(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "[verifier {}; its stderr ends:\n{}]",
            self.name,
            tail.join("\n")
        )
    }

    async fn read_line(&mut self, within: Duration) -> String {
        match tokio::time::timeout(within, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("the Verifier closed stdout {}", self.context()),
            Ok(Err(e)) => panic!("reading the Verifier: {e} {}", self.context()),
            Err(_) => panic!("no answer within {within:?} {}", self.context()),
        }
    }

    /// Sends one request line and returns the answer line.
    pub async fn ask(&mut self, request: &str) -> String {
        let sent = self
            .stdin
            .write_all(format!("{request}\n").as_bytes())
            .await;
        if let Err(e) = sent.and(self.stdin.flush().await) {
            panic!("writing to the Verifier: {e} {}", self.context());
        }
        self.read_line(ANSWER_WITHIN).await
    }

    pub async fn verify(&mut self, email: &str, key: &str) -> Answer {
        let line = self.ask(&format!("verify {email} {key}")).await;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ACCEPT", org_id, key_id] => Answer::Accept {
                org_id: (*org_id).to_owned(),
                key_id: (*key_id).to_owned(),
            },
            ["REJECT"] => Answer::Reject,
            ["UNAVAILABLE"] => Answer::Unavailable,
            _ => panic!("not an answer to verify: {line:?} {}", self.context()),
        }
    }

    pub async fn stats(&mut self) -> Stats {
        let line = self.ask("stats").await;
        parse_stats(&line)
            .unwrap_or_else(|| panic!("not a stats line: {line:?} {}", self.context()))
    }

    /// `quit`: the process must exit 0.
    pub async fn quit(mut self) {
        self.stdin.write_all(b"quit\n").await.unwrap();
        self.stdin.flush().await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit within 20 s of quit {}", self.context()))
            .unwrap();
        assert!(status.success(), "quit exited {status} {}", self.context());
    }
}

fn ms(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// The raw JSON value of top-level `name` in a flat object (numbers, booleans, null and strings
/// without escapes, which is all the stats line holds).
fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let at = json.find(&format!("\"{name}\""))? + name.len() + 2;
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = match rest.strip_prefix('"') {
        Some(string) => string.find('"')? + 2,
        None => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    Some(rest[..end].trim())
}

fn parse_stats(line: &str) -> Option<Stats> {
    let number = |name| field(line, name)?.parse::<u64>().ok();
    let boolean = |name| field(line, name)?.parse::<bool>().ok();
    let applied_sequence = match field(line, "applied_sequence")? {
        "null" => None,
        n => Some(n.parse().ok()?),
    };
    let store_id = match field(line, "store_id")? {
        "null" => None,
        s => Some(s.strip_prefix('"')?.strip_suffix('"')?.to_owned()),
    };
    Some(Stats {
        hits: number("hits")?,
        misses: number("misses")?,
        cached_keys: number("cached_keys")?,
        applied_sequence,
        store_id,
        connected: boolean("connected")?,
        fresh: boolean("fresh")?,
        flushes: number("flushes")?,
    })
}

#[test]
fn a_stats_line_parses_with_or_without_spaces() {
    let compact = r#"{"hits":3,"misses":1,"cached_keys":1,"applied_sequence":null,"store_id":"ab12","connected":true,"fresh":false,"flushes":0}"#;
    let spaced = r#"{ "hits": 3, "misses": 1, "cached_keys": 1, "applied_sequence": 7, "store_id": null, "connected": true, "fresh": false, "flushes": 0 }"#;
    let a = parse_stats(compact).unwrap();
    assert_eq!(
        (a.hits, a.applied_sequence, a.store_id.as_deref()),
        (3, None, Some("ab12"))
    );
    let b = parse_stats(spaced).unwrap();
    assert_eq!(
        (b.applied_sequence, b.store_id, b.fresh),
        (Some(7), None, false)
    );
    assert!(parse_stats(r#"{"hits":1}"#).is_none());
}
