//! Pinned mode (`--pin`): the server on one core and the load (this process, and every client
//! it starts: h2load, Python) on the other, with `taskset`, so that a row's latency is the
//! server's and not the scheduling of a client sharing its cores. Rows 1, 3 and 6 run twice on
//! the same server, unpinned and then pinned; row 8's servers run pinned; row 7's etcd members
//! are started while this process is on the load's core, so they share it with the load (a last
//! row-7 line moves them onto the server's core).

use super::*;

/// The server's core.
pub(crate) const SERVER_CORE: &str = "0";
/// This process's core while pinned, and so every client process it starts (and row 7's
/// etcd members).
pub(crate) const LOAD_CORE: &str = "1";

/// Sets the CPU affinity of every thread of `pid` (threads started later inherit it).
pub(crate) fn set_affinity(pid: u32, cores: &str) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-cp", cores, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("taskset not runnable ({e}): apt-get install util-linux"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -a -cp {cores} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Every online core of the machine, as taskset writes it (not this process's affinity,
/// which pinning narrows).
pub(crate) fn all_cores() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|cores| cores.trim().to_owned())
        .unwrap_or_else(|_| "0-1".into())
}

/// How many cores the machine has, whatever this process's affinity.
pub(crate) fn machine_cores() -> usize {
    all_cores()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => number(b).saturating_sub(number(a)) + 1,
            None => 1,
        })
        .sum()
}

/// Pins the server to `SERVER_CORE` and this process to `LOAD_CORE`; says what it did.
pub(crate) fn pin(server: &ServerUnderTest) -> Result<String, String> {
    if machine_cores() < 2 {
        return Err("pinned mode needs 2 cores".into());
    }
    let pid = server
        .pid()
        .ok_or("the server's pid is unknown (--server-pid)")?;
    if pid == std::process::id() {
        return Err("the server runs in this process (--in-process): nothing to pin apart".into());
    }
    set_affinity(pid, SERVER_CORE)?;
    set_affinity(std::process::id(), LOAD_CORE)?;
    Ok(format!(
        "pinned: server (pid {pid}) on core {SERVER_CORE}, load (this process and the clients it starts) on core {LOAD_CORE}"
    ))
}

/// Lets the server and this process run on every core again.
pub(crate) fn unpin(server: &ServerUnderTest) {
    let cores = all_cores();
    if let Some(pid) = server.pid() {
        let _ = set_affinity(pid, &cores);
    }
    let _ = set_affinity(std::process::id(), &cores);
}

/// The 1-, 5- and 15-minute load averages, as /proc/loadavg has them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Runs rows 1, 3 and 6 (those selected) again with the server and the load pinned apart,
/// each figure prefixed "pinned:"; the unpinned lines of rows 3 and 6 then defer to them.
/// Returns what it did, and row 1's pinned figures.
pub(crate) async fn measure_pinned(
    options: &Options,
    server: &ServerUnderTest,
    url: &str,
    token: &str,
    rows: &mut Vec<Row>,
) -> (String, Option<Row1>) {
    let pinned_rows: Vec<u32> = [1, 3, 6].into_iter().filter(|&r| options.row(r)).collect();
    if pinned_rows.is_empty() {
        return ("pinned: none of rows 1, 3, 6 selected".into(), None);
    }
    let described = match pin(server) {
        Ok(described) => described,
        Err(why) => {
            rows.push(Row::not_measured("1", "pinned rows 1, 3, 6", "-", &why));
            return (format!("pinned: not run ({why})"), None);
        }
    };
    eprintln!("{described}; load average {}", load_average());
    let pinned = Options {
        rows: pinned_rows,
        ..options.clone()
    };
    let mut measured = Vec::new();
    let first = measure(&pinned, server, url, token, &mut measured).await;
    unpin(server);
    for row in rows.iter_mut() {
        if (row.row == "3" || row.row == "6") && (row.result == "pass" || row.result == "MISS") {
            row.result = format!("{} (unpinned; judged pinned)", row.result);
        }
    }
    for mut row in measured {
        row.figure = format!("pinned: {}", row.figure);
        rows.push(row);
    }
    let described = format!("{described}; load average after {}", load_average());
    (described, first)
}
