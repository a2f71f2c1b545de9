//! The `rcmgr` binary run as a process on real files: limits as a table and as JSON that
//! reads back, check's three exit statuses, and short simulations whose reports show the
//! attacker contained.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use rcmgr::{ConcreteLimitConfig, PartialLimitConfig, ScalingLimitConfig};
use tempfile::TempDir;

/// A finished run of the binary.
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

fn rcmgr<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_rcmgr"))
        .args(args)
        .output()
        .expect("the rcmgr binary runs");
    Run {
        status: status.code().expect("rcmgr exits with a status"),
        stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
    }
}

/// Writes `content` to `name` in `dir` and returns the path.
fn file(dir: &TempDir, name: &str, content: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("the test file is written");
    path
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// go's defaults and go-libp2p's service limits for 8 GiB and 16384 descriptors.
fn defaults_for_8_gib() -> ConcreteLimitConfig {
    ScalingLimitConfig::default()
        .with_libp2p_defaults()
        .scale(8 << 30, 16384)
}

#[test]
fn limits_print_every_scope_as_a_table() {
    let run = rcmgr(["limits", "--memory", "8GiB", "--fds", "16384"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains("for 8.0 GiB of memory and 16,384 file descriptors"),
        "{out}"
    );
    for scope in [
        "System ",
        "Transient ",
        "PeerDefault ",
        r#"Protocol["/ipfs/ping/1.0.0"]"#,
        r#"ServicePeer["libp2p.identify"]"#,
        "Conn ",
        "Stream ",
    ] {
        assert!(out.contains(scope), "{scope} is missing from\n{out}");
    }
    let system = out
        .lines()
        .find(|line| line.starts_with("System "))
        .expect("a System row");
    let cells: Vec<&str> = system.split_whitespace().collect();
    // streams in/out/total, conns in/out/total, fd, memory
    assert_eq!(
        cells,
        [
            "System", "9216", "18432", "18432", "576", "1152", "1152", "16384", "8.1", "GiB"
        ]
    );
    assert!(out.contains("IPv4 /32: 8"), "{out}");
}

#[test]
fn limits_as_json_read_back_as_the_same_limits() {
    let run = rcmgr([
        "limits", "--memory", "8GiB", "--fds", "16384", "--format", "json",
    ]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains(r#""Memory": "8724152320""#));
    let partial = PartialLimitConfig::from_json_str(&run.stdout).expect("go's JSON format");
    let expected = defaults_for_8_gib();
    let mut read_back = partial.build(&ConcreteLimitConfig::infinite());
    // Address-based limits are not part of limit files.
    read_back.ip = expected.ip.clone();
    assert_eq!(read_back, expected);
}

#[test]
fn limits_apply_a_file_and_mark_what_it_sets() {
    let dir = TempDir::new().expect("a temporary directory");
    let limits = file(
        &dir,
        "limits.json",
        r#"{"System": {"ConnsInbound": 1000}, "PeerDefault": {"Memory": "unlimited"}}"#,
    );
    let args = |format| {
        rcmgr([
            "limits",
            "--memory",
            "8GiB",
            "--fds",
            "16384",
            "--config",
            path(&limits),
            "--format",
            format,
        ])
    };
    let json = args("json");
    assert_eq!(json.status, 0, "{}", json.stderr);
    let built = PartialLimitConfig::from_json_str(&json.stdout)
        .expect("go's JSON format")
        .build(&ConcreteLimitConfig::infinite());
    assert_eq!(built.system.conns_inbound, 1000);
    assert_eq!(built.system.conns, defaults_for_8_gib().system.conns);
    assert_eq!(built.peer_default.memory, rcmgr::BaseLimit::UNLIMITED);

    let table = args("table");
    assert_eq!(table.status, 0, "{}", table.stderr);
    assert!(table.stdout.contains("System *"), "{}", table.stdout);
    assert!(table.stdout.contains("PeerDefault *"), "{}", table.stdout);
    assert!(!table.stdout.contains("Transient *"), "{}", table.stdout);
}

#[test]
fn limits_refuse_bad_sizes_and_bad_files_with_errors() {
    let bad_size = rcmgr(["limits", "--memory", "lots"]);
    assert_eq!(bad_size.status, 2);
    assert!(
        bad_size.stderr.contains("invalid size \"lots\""),
        "{}",
        bad_size.stderr
    );

    let dir = TempDir::new().expect("a temporary directory");
    let bad = file(&dir, "bad.json", "{\n  \"System\": {\"FD\": \"many\"}\n}\n");
    let run = rcmgr(["limits", "--config", path(&bad)]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr.starts_with("rcmgr: error: limits file "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("System.FD (line 2, column"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_accepts_a_sensible_file() {
    let dir = TempDir::new().expect("a temporary directory");
    let good = file(
        &dir,
        "good.json",
        r#"{
  "System": {"Conns": 4096, "ConnsInbound": 2048, "Memory": "4294967296"},
  "PeerDefault": {"StreamsInbound": 512},
  "Protocol": {"/my/app/1.0.0": {"Streams": 256, "Memory": "67108864"}}
}"#,
    );
    let run = rcmgr(["check", path(&good), "--memory", "8GiB", "--fds", "16384"]);
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert!(run.stdout.contains("sets 3 scopes"), "{}", run.stdout);
    assert!(
        run.stdout.trim_end().ends_with("good.json: ok"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_warns_about_limits_that_cannot_work() {
    let dir = TempDir::new().expect("a temporary directory");
    let risky = file(
        &dir,
        "risky.json",
        r#"{
  "System": {"Conns": 5000, "ConnsOutbound": 5000},
  "Transient": {"Memory": "100000000000"},
  "PeerDefault": {"StreamsInbound": 100000, "Streams": "unlimited", "Memory": "65536"},
  "Conn": {"FD": "blockAll"},
  "ProtocolDefault": {"Streams": 10, "StreamsOutbound": 20},
  "Sytem": {"Conns": 1}
}"#,
    );
    let run = rcmgr(["check", path(&risky), "--memory", "8GiB", "--fds", "16384"]);
    assert_eq!(run.status, 1, "{}", run.stdout);
    let out = &run.stdout;
    for expected in [
        "risky.json: warning[inbound-conns]: System.Conns: raised to 5000",
        "warning[above-parent]: Transient.Memory",
        "warning[above-parent]: PeerDefault.StreamsInbound: 100000 is above System.StreamsInbound (9216)",
        "warning[memory-below-stream]: PeerDefault.Memory: 64.0 KiB is below Stream.Memory (16.0 MiB)",
        "warning[blocked]: Conn.FD",
        "warning[direction-above-total]: ProtocolDefault.StreamsOutbound",
        "warning[unknown-field]: Sytem",
        "risky.json: 7 warnings",
    ] {
        assert!(
            out.contains(expected),
            "{expected:?} is missing from\n{out}"
        );
    }
}

#[test]
fn check_shows_errors_at_their_line_and_column() {
    let dir = TempDir::new().expect("a temporary directory");
    let bad = file(&dir, "bad.json", "{\n  \"System\": {\"Conns\": 1.5}\n}\n");
    let run = rcmgr(["check", path(&bad)]);
    assert_eq!(run.status, 2, "{}", run.stdout);
    let out = &run.stdout;
    assert!(
        out.contains("bad.json:2:25: error: System.Conns: "),
        "{out}"
    );
    assert!(out.contains(" 2 |   \"System\": {\"Conns\": 1.5}"), "{out}");
    assert!(out.contains("   |                         ^"), "{out}");

    let truncated = file(&dir, "truncated.json", "{\"System\": {");
    let run = rcmgr(["check", path(&truncated)]);
    assert_eq!(run.status, 2, "{}", run.stdout);
    assert!(run.stdout.contains("truncated.json:1:"), "{}", run.stdout);

    let missing = dir.path().join("missing.json");
    let run = rcmgr(["check", path(&missing)]);
    assert_eq!(run.status, 2);
    assert!(
        run.stdout.contains("cannot read the file"),
        "{}",
        run.stdout
    );
}

/// The lines of a simulation report that carry its verdicts, for failure messages.
fn verdicts(report: &str) -> String {
    report
        .lines()
        .skip_while(|line| *line != "verdict")
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn simulate_contains_a_stream_flood() {
    let run = rcmgr([
        "simulate",
        "--duration",
        "2",
        "--peers",
        "50",
        "--threads",
        "2",
        "--attack",
        "stream-flood",
    ]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert!(
        out.starts_with("rcmgr simulate: 50 honest peers on 2 threads"),
        "{out}"
    );
    assert!(
        out.lines().any(|line| line.starts_with("attacker")
            && line.contains("protocol-peer (own)")
            && line.contains("inbound stream")),
        "{out}"
    );
    assert!(out.contains("peak usage against limits"), "{out}");
    assert!(
        out.contains("every handle dropped, system and transient back to zero: yes"),
        "{out}"
    );
    let verdict = verdicts(out);
    assert!(verdict.contains("honest peers served: yes"), "{verdict}");
    assert!(verdict.contains("attacker contained: yes"), "{verdict}");
    // No progress line when the output is not a terminal.
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn simulate_contains_a_conn_flood_on_a_limits_file() {
    let dir = TempDir::new().expect("a temporary directory");
    let limits = file(&dir, "limits.json", r#"{"System": {"ConnsInbound": 400}}"#);
    let run = rcmgr([
        "simulate",
        "--duration",
        "1",
        "--peers",
        "30",
        "--threads",
        "1",
        "--attack",
        "conn-flood",
        "--config",
        path(&limits),
    ]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.contains("limits.json over them"), "{out}");
    assert!(out.contains("rate limits (own)"), "{out}");
    let verdict = verdicts(out);
    assert!(verdict.contains("attacker contained: yes"), "{verdict}");
}

#[test]
fn simulate_shows_whether_a_memory_attack_is_contained() {
    // go-libp2p gives each peer about 8 GiB of ping memory, far above the 16 MiB or so of the
    // ping protocol itself, so one greedy peer can take all of it; a limits file that gives
    // each peer 1 MiB of ping memory contains it.
    let dir = TempDir::new().expect("a temporary directory");
    let fix = file(
        &dir,
        "ping.json",
        r#"{"ProtocolPeer": {"/ipfs/ping/1.0.0": {"Memory": "1048576"}}}"#,
    );
    let common = [
        "simulate",
        "--duration",
        "1",
        "--peers",
        "30",
        "--threads",
        "1",
        "--attack",
        "memory",
        "--memory",
        "4GiB",
        "--fds",
        "4096",
    ];
    let open = rcmgr(common);
    assert_eq!(open.status, 0, "{}", open.stderr);
    let verdict = verdicts(&open.stdout);
    assert!(verdict.contains("attacker contained: no"), "{verdict}");
    assert!(verdict.contains("refused by: protocol memory"), "{verdict}");

    let fixed = rcmgr(common.iter().copied().chain(["--config", path(&fix)]));
    assert_eq!(fixed.status, 0, "{}", fixed.stderr);
    let verdict = verdicts(&fixed.stdout);
    assert!(verdict.contains("attacker contained: yes"), "{verdict}");
}

#[test]
fn simulate_refuses_a_bad_duration() {
    let run = rcmgr(["simulate", "--duration", "soon"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("invalid duration"), "{}", run.stderr);
}
