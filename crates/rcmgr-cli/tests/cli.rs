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
        "warning[memory-below-stream]: PeerDefault.Memory: 64.0 KiB is below Stream.Memory (16.0 MiB), what one stream may use, and every stream of such a peer passes this scope",
        "warning[blocked]: Conn.FD",
        "warning[direction-above-total]: ProtocolDefault.StreamsOutbound",
        "warning[unknown-field]: Sytem: not a field of a limits file: ignored (go-libp2p ignores it too); did you mean System?",
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
    let bad = file(&dir, "bad.json", "{\n  \"System\": {\"FD\": \"many\"}\n}\n");
    let run = rcmgr(["check", path(&bad)]);
    assert_eq!(run.status, 2, "{}", run.stdout);
    let out = &run.stdout;
    assert!(
        out.contains("bad.json:2:25: error: System.FD: unknown limit \"many\""),
        "{out}"
    );
    assert!(
        out.contains(" 2 |   \"System\": {\"FD\": \"many\"}"),
        "{out}"
    );
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
    // A verdict of no is exit status 1, and its line gives the reason the figures support.
    let open = rcmgr(common);
    assert_eq!(open.status, 1, "{}{}", open.stdout, open.stderr);
    let verdict = verdicts(&open.stdout);
    assert!(verdict.contains("honest peers served: no: "), "{verdict}");
    assert!(
        verdict.contains("attacker contained: no: the honest peers were not served"),
        "{verdict}"
    );
    assert!(verdict.contains("refused by: protocol memory"), "{verdict}");

    let fixed = rcmgr(common.iter().copied().chain(["--config", path(&fix)]));
    assert_eq!(fixed.status, 0, "{}", fixed.stderr);
    let verdict = verdicts(&fixed.stdout);
    assert!(verdict.contains("honest peers served: yes"), "{verdict}");
    assert!(verdict.contains("attacker contained: yes"), "{verdict}");
}

#[test]
fn simulate_refuses_a_bad_duration() {
    let run = rcmgr(["simulate", "--duration", "soon"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("invalid duration"), "{}", run.stderr);
}

/// Checks that `svg` is one well-formed element tree with `<svg>` at its root: every tag is
/// closed in order.
fn assert_well_formed_svg(svg: &str) {
    assert!(svg.trim_start().starts_with("<svg"), "starts with <svg");
    let mut open: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("every tag ends") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                open.pop().as_deref(),
                Some(name.trim()),
                "tags close in order"
            );
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().expect("a tag name");
            open.push(name.to_owned());
        }
        if open.is_empty() {
            assert!(rest.trim().is_empty(), "nothing after the root element");
        }
    }
    assert!(open.is_empty(), "unclosed tags: {open:?}");
}

#[test]
fn simulate_writes_a_trace_that_trace_summarizes_and_plots() {
    let dir = TempDir::new().expect("a temporary directory");
    let trace = dir.path().join("run.jsonl.gz");
    let run = rcmgr([
        "simulate",
        "--duration",
        "1",
        "--peers",
        "20",
        "--threads",
        "1",
        "--memory",
        "256MiB",
        "--fds",
        "512",
        "--trace",
        path(&trace),
    ]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    // What the engine says it dropped (`trace_dropped`), as simulate reports it.
    let dropped = run
        .stdout
        .split("Trace written to ")
        .nth(1)
        .and_then(|rest| rest.split("; ").nth(1))
        .and_then(|rest| rest.split(" events dropped").next())
        .expect("simulate says how many events the trace dropped")
        .to_owned();

    let plot = dir.path().join("usage.svg");
    let run = rcmgr(["trace", path(&trace), "--plot", path(&plot)]);
    let out = &run.stdout;
    if dropped == "0" {
        assert_eq!(run.status, 0, "{out}{}", run.stderr);
        assert!(!out.contains("partial"), "{out}");
    } else {
        // The trace's own records add up to the engine's count.
        assert_eq!(run.status, 1, "{out}{}", run.stderr);
        assert!(
            out.contains(&format!(
                "Warning: the trace is partial: it dropped {dropped} events"
            )),
            "{dropped} dropped, says simulate:\n{out}"
        );
    }
    for part in [
        "Events by type",
        "start ",
        "add_stream",
        "Refusals by scope and resource",
        "Peak usage of the top-level scopes",
        "system ",
        "transient ",
        "Usage over time drawn in",
    ] {
        assert!(out.contains(part), "{part} is missing from\n{out}");
    }
    // The stream flood is refused, and the refusals are attributed.
    let refusals = out
        .split("Refusals by scope and resource")
        .nth(1)
        .and_then(|rest| rest.split("Peak usage").next())
        .expect("a refusals section");
    assert!(refusals.contains("streams (inbound)"), "{refusals}");
    let svg = std::fs::read_to_string(&plot).expect("the plot is written");
    assert_well_formed_svg(&svg);
    for title in ["streams", "connections", "file descriptors", "memory (MiB)"] {
        assert!(svg.contains(title), "{title} is missing from the plot");
    }
}

#[test]
fn trace_warns_about_lines_that_are_not_events() {
    let dir = TempDir::new().expect("a temporary directory");
    let trace = file(
        &dir,
        "mixed.jsonl",
        concat!(
            r#"{"Time":"2024-05-01T12:00:00Z","Type":"add_stream","Scope":{"Class":"system"},"Name":"system","DeltaIn":1,"StreamsIn":1}"#,
            "\nnot json\n",
            r#"{"Time":"2024-05-01T12:00:01.5+01:00","Type":"block_add_stream","Name":"transient","DeltaIn":1,"StreamsIn":3}"#,
            "\n"
        ),
    );
    let run = rcmgr(["trace", path(&trace)]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stdout.contains("2 events"), "{}", run.stdout);
    assert!(run.stdout.contains("transient"), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 line is not a trace event (line 2"),
        "{}",
        run.stdout
    );
    let missing = rcmgr(["trace", "/nonexistent/trace.jsonl"]);
    assert_eq!(missing.status, 2);
    assert!(
        missing.stderr.contains("cannot read the trace"),
        "{}",
        missing.stderr
    );
}

#[test]
fn simulate_serves_metrics_on_loopback_while_it_runs() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_rcmgr"))
        .args([
            "simulate",
            "--duration",
            "2",
            "--peers",
            "10",
            "--threads",
            "1",
        ])
        .args([
            "--memory",
            "256MiB",
            "--fds",
            "512",
            "--metrics",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the rcmgr binary runs");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("a first line");
    let addr = first
        .trim()
        .strip_prefix("Serving metrics at http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("the address comes first: {first}"))
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).expect("the server answers");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("a request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    for metric in [
        "libp2p_rcmgr_connections{",
        "libp2p_rcmgr_streams{",
        "libp2p_rcmgr_limit{",
        "libp2p_rcmgr_peer_connections_bucket",
    ] {
        assert!(
            response.contains(metric),
            "{metric} is missing from\n{response}"
        );
    }
    let status = child.wait().expect("simulate finishes");
    assert!(status.success());
    let refused = rcmgr(["simulate", "--duration", "1", "--metrics", "192.0.2.1:9000"]);
    assert_eq!(refused.status, 2);
    assert!(
        refused.stderr.contains("only loopback"),
        "{}",
        refused.stderr
    );
}

/// Runs the binary with its address space capped at `limit_bytes` (`ulimit -v`, Linux): it
/// fails to allocate, and so fails the test, if it ever takes more.
#[cfg(target_os = "linux")]
fn rcmgr_within(limit_bytes: u64, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {} && exec \"$0\" \"$@\"",
            limit_bytes / 1024
        ))
        .arg(env!("CARGO_BIN_EXE_rcmgr"))
        .args(args)
        .output()
        .expect("sh runs the binary");
    Run {
        status: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

#[test]
fn check_accepts_its_own_limits_output_and_the_readme_fix() {
    let dir = TempDir::new().expect("a temporary directory");
    for sizing in [&["--memory", "8GiB", "--fds", "16384"][..], &[][..]] {
        let own = rcmgr(
            ["limits", "--format", "json"]
                .iter()
                .chain(sizing)
                .copied()
                .collect::<Vec<_>>(),
        );
        assert_eq!(own.status, 0, "{}", own.stderr);
        let own = file(&dir, "own.json", &own.stdout);
        let run = rcmgr(
            ["check", path(&own)]
                .iter()
                .chain(sizing)
                .copied()
                .collect::<Vec<_>>(),
        );
        assert_eq!(run.status, 0, "{sizing:?}: {}", run.stdout);
        assert!(!run.stdout.contains("warning"), "{}", run.stdout);
        assert!(run.stdout.contains("sets 35 scopes ("), "{}", run.stdout);
        assert!(
            run.stdout.trim_end().ends_with("own.json: ok"),
            "{}",
            run.stdout
        );
    }
    // The README's fix for the ping memory weakness.
    let fix = file(
        &dir,
        "ping.json",
        r#"{"ProtocolPeer": {"/ipfs/ping/1.0.0": {"Memory": "1048576"}}}"#,
    );
    let run = rcmgr(["check", path(&fix), "--memory", "4GiB", "--fds", "4096"]);
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert!(
        run.stdout.trim_end().ends_with("ping.json: ok"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_says_what_a_misspelt_field_or_scope_meant() {
    let dir = TempDir::new().expect("a temporary directory");
    let typos = file(
        &dir,
        "typos.json",
        r#"{
  "System": {"ConnInbound": 2000},
  "Protocols": {"/my/app/1.0.0": {"Streams": 64}},
  "Sytem": {},
  "PeerDefault": {"Memmory": "1048576"}
}"#,
    );
    let run = rcmgr(["check", path(&typos), "--memory", "8GiB", "--fds", "16384"]);
    assert_eq!(run.status, 1, "{}", run.stdout);
    for expected in [
        "warning[unknown-field]: System.ConnInbound: not a field of a limits file: ignored (go-libp2p ignores it too); did you mean ConnsInbound?",
        "warning[unknown-field]: Protocols: not a field of a limits file: ignored (go-libp2p ignores it too); did you mean Protocol?",
        "warning[unknown-field]: Sytem: not a field of a limits file: ignored (go-libp2p ignores it too); did you mean System?",
        "warning[unknown-field]: PeerDefault.Memmory: not a field of a limits file: ignored (go-libp2p ignores it too); did you mean Memory?",
        "typos.json: 4 warnings",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected:?} is missing from\n{}",
            run.stdout
        );
    }
}

#[test]
fn check_names_a_byte_order_mark_and_bytes_that_are_not_utf8() {
    let dir = TempDir::new().expect("a temporary directory");
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("the test file is written");
        path
    };
    let bom = write(
        "bom.json",
        b"\xef\xbb\xbf{\"System\": {\"ConnsInbound\": 100}}\n",
    );
    let run = rcmgr(["check", path(&bom)]);
    assert_eq!(run.status, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "bom.json:1:1: error: starts with a UTF-8 byte order mark (bytes EF BB BF), which JSON does not allow"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("expected value"), "{}", run.stdout);

    let latin1 = write(
        "latin1.json",
        b"{\n  \"Service\": {\"caf\xe9\": {\"Streams\": 4}}\n}\n",
    );
    let run = rcmgr(["check", path(&latin1)]);
    assert_eq!(run.status, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "latin1.json:2:19: error: byte 0xE9 is not UTF-8: a limits file is UTF-8 text"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("   |                   ^"),
        "{}",
        run.stdout
    );

    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain("{}".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let utf16 = write("utf16.json", &utf16);
    let run = rcmgr(["check", path(&utf16)]);
    assert_eq!(run.status, 2, "{}", run.stdout);
    assert!(run.stdout.contains("is UTF-16 text"), "{}", run.stdout);
    // The other commands read limits files the same way.
    let run = rcmgr(["limits", "--config", path(&bom)]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("byte order mark"), "{}", run.stderr);
}

#[cfg(target_os = "linux")]
#[test]
fn check_memory_stays_a_small_multiple_of_the_file_size() {
    // 20 MB of per-protocol limits, as a generated file holds them.
    let dir = TempDir::new().expect("a temporary directory");
    let path_big = dir.path().join("big.json");
    let mut text = String::from("{\"System\": {\"ConnsInbound\": 1000}, \"Protocol\": {\n");
    let mut index = 0;
    while text.len() < 20_000_000 {
        text.push_str(&format!(
            "  \"/app/proto/{index}\": {{\"StreamsInbound\": 64, \"Memory\": \"16777216\"}},\n"
        ));
        index += 1;
    }
    text.push_str("  \"/last\": {}\n}}\n");
    std::fs::write(&path_big, &text).expect("written");
    let size = text.len() as u64;
    drop(text);
    // The binary and its libraries take some address space of their own. Before the checker
    // kept memory near the file's size, this file took about 16 times its size.
    let run = rcmgr_within(
        (64 << 20) + 6 * size,
        &[
            "check",
            path(&path_big),
            "--memory",
            "8GiB",
            "--fds",
            "16384",
        ],
    );
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let scopes = rcmgr_cli::units::Count(index + 1);
    assert!(
        run.stdout.contains(&format!("sets {scopes} scopes")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.trim_end().ends_with("big.json: ok"),
        "{}",
        run.stdout
    );
}

#[test]
fn simulate_refuses_arguments_it_cannot_run_with_a_clear_error() {
    for (args, message) in [
        (
            &["--peers", "1000000000"][..],
            "invalid value '1000000000' for '--peers <N>': 1000000000 honest peers are too many: rcmgr simulate runs at most 100,000",
        ),
        (
            &["--threads", "0"][..],
            "invalid value '0' for '--threads <N>': at least 1 thread",
        ),
        (
            &["--threads", "100000"][..],
            "invalid value '100000' for '--threads <N>': 100000 threads are too many: at most 1,024",
        ),
        (
            &["--duration", "25h"][..],
            "invalid value '25h' for '--duration <S>': invalid duration \"25h\"",
        ),
        (
            &["--duration", "1441m"][..],
            "invalid value '1441m' for '--duration <S>': 86460.0 s is too long: rcmgr simulate runs at most 24 hours",
        ),
    ] {
        let run = rcmgr(["simulate"].iter().chain(args).copied().collect::<Vec<_>>());
        assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "nothing ran: {}", run.stdout);
    }
}

/// The exit statuses `rcmgr simulate --help` documents.
#[test]
fn simulate_documents_its_exit_statuses() {
    let run = rcmgr(["simulate", "--help"]);
    assert_eq!(run.status, 0);
    assert!(
        run.stdout
            .contains("Exit 0 when no verdict is no, 1 when one is, 2 for bad usage"),
        "{}",
        run.stdout
    );
    let run = rcmgr([
        "simulate",
        "--duration",
        "1",
        "--peers",
        "10",
        "--threads",
        "1",
        "--attack",
        "none",
        "--memory",
        "256MiB",
        "--fds",
        "512",
    ]);
    assert_eq!(run.status, 0, "{}", run.stdout);
    let verdict = verdicts(&run.stdout);
    assert!(
        verdict.contains("honest peers served: yes: 100% of their"),
        "{verdict}"
    );
    assert!(
        verdict.contains("attacker contained: no attacker in this run"),
        "{verdict}"
    );
}

#[test]
fn trace_of_a_file_without_events_is_an_error() {
    let dir = TempDir::new().expect("a temporary directory");
    for (name, content) in [("empty.jsonl", ""), ("junk.jsonl", "hello\nworld\n")] {
        let trace = file(&dir, name, content);
        let run = rcmgr(["trace", path(&trace)]);
        assert_eq!(run.status, 2, "{name}: {}", run.stdout);
        assert!(
            run.stdout.is_empty(),
            "no summary of nothing: {}",
            run.stdout
        );
        assert!(
            run.stderr.contains(&format!(
                "rcmgr: error: cannot read the trace {}: no trace event in it",
                path(&trace)
            )),
            "{}",
            run.stderr
        );
    }
}

/// A gzip trace whose first line is `length` bytes long, then one real event.
fn gzip_with_a_long_line(path: &Path, length: u64) {
    use std::io::Write as _;
    let file = std::fs::File::create(path).expect("created");
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let chunk = vec![b'x'; 1 << 20];
    let mut left = length;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        gz.write_all(&chunk[..n]).expect("written");
        left -= n as u64;
    }
    gz.write_all(b"\n{\"Time\":\"2024-05-01T12:00:00Z\",\"Type\":\"add_stream\",\"Name\":\"system\",\"DeltaIn\":1,\"StreamsIn\":1}\n")
        .expect("written");
    gz.finish().expect("finished");
}

#[cfg(target_os = "linux")]
#[test]
fn trace_skips_a_line_too_long_to_be_an_event_without_holding_it() {
    let dir = TempDir::new().expect("a temporary directory");
    let trace = dir.path().join("long.jsonl.gz");
    // 256 MiB in one line, in a gzip file of a few hundred KiB.
    gzip_with_a_long_line(&trace, 256 << 20);
    let run = rcmgr_within(128 << 20, &["trace", path(&trace)]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Trace "), "{}", run.stdout);
    assert!(run.stdout.contains(": 1 events"), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "Warning: 1 line is longer than 4.0 MiB and skipped unread (line 1, is at least 256.0 MiB long)"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn trace_reports_the_events_a_trace_dropped_and_marks_the_gaps() {
    let dir = TempDir::new().expect("a temporary directory");
    let trace = file(
        &dir,
        "partial.jsonl",
        concat!(
            r#"{"Time":"2024-05-01T12:00:00Z","Type":"start","Limit":{"System":{"Streams":8}}}"#,
            "\n",
            r#"{"Time":"2024-05-01T12:00:00Z","Type":"create_scope","Scope":{"Class":"system"},"Name":"system","Limit":{"Streams":8}}"#,
            "\n",
            r#"{"Time":"2024-05-01T12:00:01Z","Type":"add_stream","Name":"system","DeltaIn":1,"StreamsIn":1}"#,
            "\n",
            r#"{"Time":"2024-05-01T12:00:02Z","Type":"dropped_events","Dropped":1234}"#,
            "\n",
            r#"{"Time":"2024-05-01T12:00:03Z","Type":"add_stream","Name":"system","DeltaIn":1,"StreamsIn":5}"#,
            "\n",
            r#"{"Time":"2024-05-01T12:00:04Z","Type":"block_add_stream","Name":"system","DeltaIn":1,"StreamsIn":8}"#,
            "\n",
            r#"{"Time":"2024-05-01T12:00:05Z","Type":"dropped_events","Dropped":10}"#,
            "\n",
        ),
    );
    let plot = dir.path().join("partial.svg");
    let run = rcmgr(["trace", path(&trace), "--plot", path(&plot)]);
    assert_eq!(
        run.status, 1,
        "a partial trace is a warning: {}",
        run.stdout
    );
    let out = &run.stdout;
    assert!(
        out.contains("Warning: the trace is partial: it dropped 1,244 events because it could not keep up (its dropped_events records say so), in 2 gaps, the largest 1,234 events between 2.000 s and 3.000 s."),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|line| line.trim_start().starts_with("dropped_events")
                && line.trim_end().ends_with("2  (records of dropped events)")),
        "{out}"
    );
    assert!(
        out.contains("Refusals by scope and resource (at least)"),
        "{out}"
    );
    assert!(
        out.contains("Peak usage of the top-level scopes (at least)"),
        "{out}"
    );
    assert!(
        out.contains("system                 streams in 5 "),
        "{out}"
    );
    let svg = std::fs::read_to_string(&plot).expect("the plot is written");
    assert_well_formed_svg(&svg);
    for part in [
        "events dropped",
        "system limit",
        "refusals (1)",
        "partial: 1,244 events dropped",
    ] {
        assert!(svg.contains(part), "{part} is missing from the plot");
    }
}
