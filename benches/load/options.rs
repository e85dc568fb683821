//! The load generator's flags.

use super::*;

// Options

#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) target: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) server_pid: Option<u32>,
    pub(crate) in_process: bool,
    /// Rows 1, 3, 6 also with the server and the load on cores of their own (`pin.rs`).
    pub(crate) pin: bool,
    pub(crate) subscribers: usize,
    pub(crate) subscriber_connections: usize,
    pub(crate) connections: usize,
    pub(crate) in_flight: usize,
    pub(crate) rounds: usize,
    pub(crate) window: Duration,
    /// Row 1's open-loop rate, as a fraction of Health/Check's peak (the target says 0.8).
    pub(crate) load_fraction: f64,
    pub(crate) rows: Vec<u32>,
    /// Row 5: keys in the big store, and in the store it is compared with.
    pub(crate) scale_keys: usize,
    pub(crate) scale_baseline: usize,
    /// Row 5: where to keep its stores between runs (built once, reused after).
    pub(crate) scale_dir: Option<PathBuf>,
    /// Row 5: `--cache-bytes` for its servers (None: the server's default).
    pub(crate) scale_cache_bytes: Option<String>,
}

impl Options {
    pub(crate) fn parse() -> Options {
        let mut args = std::env::args().skip(1);
        let mut o = Options {
            quick: false,
            target: None,
            token_file: None,
            server_pid: None,
            in_process: false,
            pin: false,
            subscribers: 1000,
            subscriber_connections: 100,
            connections: 4,
            in_flight: 32,
            rounds: 5,
            window: Duration::from_secs(2),
            load_fraction: 0.8,
            rows: vec![1, 2, 3, 4, 5, 6, 7, 8],
            scale_keys: 1_000_000,
            scale_baseline: 1_000,
            scale_dir: None,
            scale_cache_bytes: None,
        };
        let mut keys = None;
        let mut subscribers = None;
        let mut rounds = None;
        let mut window = None;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .unwrap_or_else(|| panic!("{name} needs a value"))
            };
            match arg.as_str() {
                "--quick" => o.quick = true,
                "--target" => o.target = Some(value("--target")),
                "--token-file" => o.token_file = Some(value("--token-file").into()),
                "--server-pid" => o.server_pid = Some(number(&value("--server-pid")) as u32),
                "--in-process" => o.in_process = true,
                "--pin" => o.pin = true,
                "--subscribers" => subscribers = Some(number(&value("--subscribers"))),
                "--connections" => o.connections = number(&value("--connections")).max(1),
                "--in-flight" => o.in_flight = number(&value("--in-flight")).max(1),
                "--rounds" => rounds = Some(number(&value("--rounds")).max(1)),
                "--window-ms" => {
                    window = Some(Duration::from_millis(number(&value("--window-ms")) as u64))
                }
                "--load-fraction" => {
                    o.load_fraction = value("--load-fraction")
                        .parse()
                        .expect("--load-fraction is a number such as 0.8")
                }
                "--keys" => keys = Some(number(&value("--keys")).max(1)),
                "--scale-dir" => o.scale_dir = Some(value("--scale-dir").into()),
                "--cache-bytes" => o.scale_cache_bytes = Some(value("--cache-bytes")),
                "--rows" => {
                    o.rows = value("--rows")
                        .split(',')
                        .map(|r| number(r.trim()) as u32)
                        .collect()
                }
                // `cargo bench` passes --bench; a criterion filter or flag is not ours.
                _ => {}
            }
        }
        if o.quick {
            o.rounds = 3;
            o.window = Duration::from_millis(500);
            o.subscribers = 100;
            o.scale_keys = 5_000;
        }
        o.scale_keys = keys.unwrap_or(o.scale_keys);
        o.subscribers = subscribers.unwrap_or(o.subscribers).max(1);
        o.rounds = rounds.unwrap_or(o.rounds);
        o.window = window.unwrap_or(o.window);
        o
    }

    pub(crate) fn row(&self, row: u32) -> bool {
        self.rows.contains(&row)
    }
}

pub(crate) fn number(text: &str) -> usize {
    text.replace(['_', ','], "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text}"))
}
