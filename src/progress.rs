//! What `zsc backup` and `zsc restore` show while they run and say when they end: a progress
//! line on stderr when stderr is a terminal (nothing otherwise: indicatif hides itself), and
//! always a closing count with its rate.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::store::Done;

/// A running backup's or restore's progress display.
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    /// The backup file's size, when known (a restore's progress is its share of it).
    total_bytes: Option<u64>,
}

impl Progress {
    /// A backup's: entries and bytes written so far, and their rate (the total is unknown
    /// until every tree is read).
    pub fn backup() -> Progress {
        let style = ProgressStyle::with_template("{spinner} backing up: {msg} [{elapsed_precise}]")
            .expect("a valid template");
        let bar = ProgressBar::no_length().with_style(style);
        bar.set_message("opening the data dir");
        Progress::new(bar, None)
    }

    /// A restore's: the share of the backup file (of `total_bytes`) read and applied so far.
    pub fn restore(total_bytes: u64) -> Progress {
        Progress::share_of_file("restoring", total_bytes)
    }

    /// An online backup's: the share of the backup file (of `total_bytes`) received so far.
    pub fn receive(total_bytes: u64) -> Progress {
        Progress::share_of_file("backing up", total_bytes)
    }

    fn share_of_file(doing: &str, total_bytes: u64) -> Progress {
        let style = ProgressStyle::with_template(&format!(
            "{doing}: {{binary_bytes}}/{{binary_total_bytes}} ({{msg}}), {{binary_bytes_per_sec}}, {{eta}} left [{{wide_bar}}]",
        ))
        .expect("a valid template")
        .progress_chars("=> ");
        Progress::new(
            ProgressBar::new(total_bytes).with_style(style),
            Some(total_bytes),
        )
    }

    fn new(bar: ProgressBar, total_bytes: Option<u64>) -> Progress {
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        // Redrawn (the elapsed time, the spinner) even while no entry comes: opening a large
        // store takes a while.
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress {
            bar,
            started: Instant::now(),
            total_bytes,
        }
    }

    /// Shows how far the command has got.
    pub fn update(&self, done: Done) {
        match self.total_bytes {
            Some(_) => {
                self.bar.set_message(format!("{} entries", done.entries));
                self.bar.set_position(done.bytes);
            }
            None => {
                let seconds = self.started.elapsed().as_secs_f64().max(1e-6);
                let rate = done.entries as f64 / seconds;
                self.bar.set_message(format!(
                    "{} entries, {}, {rate:.0} entries/s",
                    done.entries,
                    mib(done.bytes)
                ));
            }
        }
    }

    /// Clears the progress line (the closing line says it all); returns how long the command
    /// ran.
    pub fn finish(self) -> Duration {
        self.bar.finish_and_clear();
        self.started.elapsed()
    }
}

/// "N entries, X MiB in T s (R entries/s, M MiB/s)": the closing line's figures.
pub fn summary(done: Done, took: Duration) -> String {
    let seconds = took.as_secs_f64().max(1e-6);
    format!(
        "{} entries, {} in {:.2} s ({:.0} entries/s, {:.1} MiB/s)",
        done.entries,
        mib(done.bytes),
        took.as_secs_f64(),
        done.entries as f64 / seconds,
        done.bytes as f64 / seconds / (1024.0 * 1024.0)
    )
}

/// This process's peak resident memory (VmHWM), where the kernel reports it (Linux).
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_gives_counts_and_rates() {
        let done = Done {
            entries: 2_000_000,
            bytes: 100 * 1024 * 1024,
        };
        assert_eq!(
            summary(done, Duration::from_secs(4)),
            "2000000 entries, 100.0 MiB in 4.00 s (500000 entries/s, 25.0 MiB/s)"
        );
    }
}
