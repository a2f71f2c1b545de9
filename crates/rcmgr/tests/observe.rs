//! Observability end to end: a trace file written during a scripted workload reads back to the
//! events the workload implies; a full queue drops and counts without blocking; the metrics
//! callbacks fire once per event; refusals are logged with go's keys.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use rcmgr::{
    BaseLimit, ConcreteLimitConfig, Direction, LimitExceeded, MetricsReporter, PeerId, Priority,
    ResourceManager, ResourceScope, TraceEvent, TraceEventType, TraceLimit,
};

/// One event as a line of text: its type, scope and every non-zero number.
fn describe(event: &TraceEvent) -> String {
    let mut text = event.kind.to_string();
    if let Some(scope) = &event.scope {
        text.push(' ');
        text.push_str(&scope.to_string());
    }
    for (name, value) in [
        ("prio", i64::from(event.priority)),
        ("delta", event.delta),
        ("in", event.delta_in),
        ("out", event.delta_out),
        ("| memory", event.memory),
        ("| streams_in", event.streams_in),
        ("| streams_out", event.streams_out),
        ("| conns_in", event.conns_in),
        ("| conns_out", event.conns_out),
        ("| fd", event.fd),
    ] {
        if value != 0 {
            text.push_str(&format!(" {name}={value}"));
        }
    }
    text
}

fn read_trace(path: &Path) -> Vec<TraceEvent> {
    let file = std::fs::File::open(path).expect("the trace file exists");
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    reader
        .lines()
        .map(|line| {
            let line = line.expect("the trace reads");
            serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"))
        })
        .collect()
}

#[test]
fn a_gzip_trace_reads_back_to_the_events_of_the_workload() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("trace.jsonl.gz");
    let mut limits = ConcreteLimitConfig::infinite();
    limits.peer_default = BaseLimit {
        streams_outbound: 1,
        ..BaseLimit::unlimited()
    };
    let before = SystemTime::now();
    let rm = ResourceManager::builder(limits.clone())
        .trace_file(&path)
        .build()
        .expect("the manager builds");
    let peer = PeerId::random();
    let mut conn = rm
        .open_connection(
            Direction::Inbound,
            true,
            &"/ip4/10.0.0.1/tcp/1".parse().expect("ma"),
        )
        .expect("unlimited");
    conn.set_peer(peer).expect("unlimited");
    let mut stream = rm
        .open_stream(peer, Direction::Outbound)
        .expect("the first fits");
    stream.set_protocol("/p").expect("unlimited");
    assert!(
        rm.open_stream(peer, Direction::Outbound).is_err(),
        "the peer holds one"
    );
    stream
        .reserve_memory(4096, Priority::HIGH)
        .expect("unlimited");
    stream.release_memory(4096);
    drop(stream);
    drop(conn);
    drop(rm);
    let after = SystemTime::now();

    let events = read_trace(&path);
    let p = format!("peer:{peer}");
    let pp = format!("protocol:/p.peer:{peer}");
    let expected = vec![
        "start".to_owned(),
        "create_scope system".to_owned(),
        "create_scope transient".to_owned(),
        "create_scope allowlistedSystem".to_owned(),
        "create_scope allowlistedTransient".to_owned(),
        "create_scope conn-1".to_owned(),
        "add_conn transient delta=1 in=1 | conns_in=1 | fd=1".to_owned(),
        "add_conn system delta=1 in=1 | conns_in=1 | fd=1".to_owned(),
        "add_conn conn-1 delta=1 in=1 | conns_in=1 | fd=1".to_owned(),
        format!("create_scope {p}"),
        format!("add_conn {p} delta=1 in=1 | conns_in=1 | fd=1"),
        "remove_conn transient delta=-1 in=-1".to_owned(),
        "create_scope stream-1".to_owned(),
        format!("add_stream {p} out=1 | streams_out=1"),
        "add_stream transient out=1 | streams_out=1".to_owned(),
        "add_stream system out=1 | streams_out=1".to_owned(),
        "add_stream stream-1 out=1 | streams_out=1".to_owned(),
        "create_scope protocol:/p".to_owned(),
        format!("create_scope {pp}"),
        "add_stream protocol:/p out=1 | streams_out=1".to_owned(),
        format!("add_stream {pp} out=1 | streams_out=1"),
        "remove_stream transient out=-1".to_owned(),
        "create_scope stream-2".to_owned(),
        format!("block_add_stream {p} out=1 | streams_out=1"),
        "destroy_scope stream-2".to_owned(),
        format!("reserve_memory {p} prio=203 delta=4096 | memory=4096"),
        format!("reserve_memory {pp} prio=203 delta=4096 | memory=4096"),
        "reserve_memory protocol:/p prio=203 delta=4096 | memory=4096".to_owned(),
        "reserve_memory system prio=203 delta=4096 | memory=4096".to_owned(),
        "reserve_memory stream-1 prio=203 delta=4096 | memory=4096".to_owned(),
        "release_memory stream-1 delta=-4096".to_owned(),
        format!("release_memory {p} delta=-4096"),
        format!("release_memory {pp} delta=-4096"),
        "release_memory protocol:/p delta=-4096".to_owned(),
        "release_memory system delta=-4096".to_owned(),
        format!("remove_stream {p} out=-1"),
        format!("remove_stream {pp} out=-1"),
        "remove_stream protocol:/p out=-1".to_owned(),
        "remove_stream system out=-1".to_owned(),
        "destroy_scope stream-1".to_owned(),
        format!("remove_conn {p} delta=-1 in=-1"),
        "remove_conn system delta=-1 in=-1".to_owned(),
        "destroy_scope conn-1".to_owned(),
    ];
    let got: Vec<String> = events.iter().map(describe).collect();
    assert_eq!(got, expected);

    let start = &events[0];
    let Some(TraceLimit::Config(config)) = &start.limit else {
        panic!("start carries the limits: {start:?}");
    };
    assert_eq!(config.build(&ConcreteLimitConfig::infinite()), limits);
    let created: Vec<_> = events
        .iter()
        .filter(|e| e.kind == TraceEventType::CreateScope)
        .collect();
    assert!(
        created
            .iter()
            .all(|e| matches!(e.limit, Some(TraceLimit::Scope(_))))
    );
    let slack = Duration::from_millis(50);
    for pair in events.windows(2) {
        assert!(pair[0].time <= pair[1].time, "times never go backwards");
    }
    assert!(
        events
            .iter()
            .all(|e| e.time + slack >= before && e.time <= after + slack)
    );
}

#[test]
fn spans_of_every_scope_are_traced() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("trace.jsonl");
    let rm = ResourceManager::builder(ConcreteLimitConfig::infinite())
        .trace_file(&path)
        .build()
        .expect("the manager builds");
    let span = rm.system().begin_span().expect("open");
    let inner = span.begin_span().expect("open");
    inner.reserve_memory(10, Priority::LOW).expect("unlimited");
    drop(inner);
    drop(span);
    rm.flush_trace();
    let text = std::fs::read_to_string(&path).expect("the trace reads");
    assert!(
        text.contains(r#""Scope":{"Class":"system","Span":"1.1"},"Name":"system.span-1.span-1""#),
        "{text}"
    );
    // After start and the fixed scopes' creation.
    let got: Vec<String> = read_trace(&path).iter().skip(5).map(describe).collect();
    assert_eq!(
        got,
        [
            "create_scope system.span-1",
            "create_scope system.span-1.span-1",
            "reserve_memory system prio=101 delta=10 | memory=10",
            "reserve_memory system.span-1 prio=101 delta=10 | memory=10",
            "reserve_memory system.span-1.span-1 prio=101 delta=10 | memory=10",
            // A close releases from the owner and records its own end.
            "release_memory system.span-1 delta=-10",
            "release_memory system delta=-10",
            "destroy_scope system.span-1.span-1",
            "destroy_scope system.span-1",
        ]
    );
}

/// A writer that takes its time with every write: the trace falls behind.
#[derive(Clone, Default)]
struct SlowLines(Arc<Mutex<Vec<u8>>>);

impl SlowLines {
    /// The lines written so far.
    fn line_count(&self) -> u64 {
        self.events().len() as u64
    }

    /// The events written so far.
    fn events(&self) -> Vec<TraceEvent> {
        self.0
            .lock()
            .expect("not poisoned")
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).expect("a trace event"))
            .collect()
    }
}

impl Write for SlowLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(2));
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_queue_drops_and_counts_and_never_blocks() {
    let lines = SlowLines::default();
    let rm = ResourceManager::builder(ConcreteLimitConfig::infinite())
        .trace(lines.clone())
        .trace_queue(1)
        .build()
        .expect("the manager builds");
    let peer = PeerId::random();
    let _view = rm.peer(&peer);
    const STREAMS: u64 = 20_000;
    for _ in 0..STREAMS {
        drop(rm.open_stream(peer, Direction::Inbound).expect("unlimited"));
    }
    let dropped = rm.trace_dropped();
    assert!(
        dropped > 0,
        "a queue of one batch behind a slow writer overflows"
    );
    // Once the writer has caught up, operations are recorded again: a stream opened after a
    // flush is written whole, and nothing more is dropped. (Each operation hands on a batch
    // and the queue holds one: the flushes keep the two from meeting a full queue.)
    rm.flush_trace();
    let before = lines.line_count();
    let stream = rm.open_stream(peer, Direction::Inbound).expect("unlimited");
    rm.flush_trace();
    drop(stream);
    rm.flush_trace();
    assert_eq!(
        rm.trace_dropped(),
        dropped,
        "nothing dropped after catching up"
    );
    assert_eq!(
        lines.line_count(),
        before + 9,
        "the last stream is traced whole"
    );
    drop(rm);
    // The trace says itself how many events it lost, in records between the others.
    let events = lines.events();
    let (records, written): (Vec<_>, Vec<_>) = events
        .iter()
        .partition(|e| e.kind == TraceEventType::DroppedEvents);
    assert!(!records.is_empty());
    assert_eq!(records.iter().map(|e| e.dropped).sum::<u64>(), dropped);
    // start and the four fixed scopes, the peer's creation, then per stream: create, three
    // edges and its own add, three edge removals and destroy.
    assert_eq!(written.len() as u64 + dropped, 5 + 1 + 9 * (STREAMS + 1));
}

/// A reporter that takes its time with every event: the writer falls behind.
#[derive(Debug)]
struct SlowReporter;

impl rcmgr::TraceReporter for SlowReporter {
    fn consume(&self, _: &TraceEvent) {
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_trace_file_begins_with_the_fixed_scopes_and_counts_its_own_drops() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("trace.jsonl.gz");
    let mut limits = ConcreteLimitConfig::infinite();
    limits.system.streams_inbound = 1 << 20;
    limits.transient.conns = 77;
    limits.allowlisted_system.memory = 1 << 30;
    limits.allowlisted_transient.fd = 5;
    let rm = ResourceManager::builder(limits.clone())
        .trace_file(&path)
        .trace_reporter(Arc::new(SlowReporter))
        .trace_queue(1)
        .build()
        .expect("the manager builds");
    const THREADS: u64 = 2;
    const STREAMS: u64 = 5_000;
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let rm = &rm;
            scope.spawn(move || {
                let peer = PeerId::random();
                let _view = rm.peer(&peer);
                for _ in 0..STREAMS {
                    drop(rm.open_stream(peer, Direction::Inbound).expect("unlimited"));
                }
            });
        }
    });
    let dropped = rm.trace_dropped();
    assert!(
        dropped > 0,
        "a slow writer behind a queue of one batch drops"
    );
    drop(rm);

    let events = read_trace(&path);
    let preamble: Vec<String> = events.iter().take(5).map(describe).collect();
    assert_eq!(
        preamble,
        [
            "start",
            "create_scope system",
            "create_scope transient",
            "create_scope allowlistedSystem",
            "create_scope allowlistedTransient",
        ]
    );
    let created: Vec<BaseLimit> = events[1..5]
        .iter()
        .map(|e| match e.limit {
            Some(TraceLimit::Scope(limit)) => limit,
            _ => panic!("create_scope carries the scope's limit: {e:?}"),
        })
        .collect();
    assert_eq!(
        created,
        [
            limits.system,
            limits.transient,
            limits.allowlisted_system,
            limits.allowlisted_transient
        ]
    );
    assert!(events[..5].iter().all(|e| e.time == events[0].time));
    let in_file: u64 = events
        .iter()
        .filter(|e| e.kind == TraceEventType::DroppedEvents)
        .map(|e| e.dropped)
        .sum();
    assert_eq!(in_file, dropped, "the file's count is the manager's");
    let written = events
        .iter()
        .filter(|e| e.kind != TraceEventType::DroppedEvents)
        .count() as u64;
    // The preamble, each thread's peer, and 9 events per stream.
    assert_eq!(written + dropped, 5 + THREADS * (1 + 9 * STREAMS));
}

/// Counts every callback by name, and the refusals' details.
#[derive(Debug, Default)]
struct Calls {
    counts: Mutex<BTreeMap<String, u64>>,
    refusals: Mutex<Vec<LimitExceeded>>,
    asked: Mutex<Vec<(String, rcmgr::ScopeStat)>>,
    conn_memory: Mutex<Vec<(u64, u64)>>,
}

impl Calls {
    fn hit(&self, name: &str) {
        *self
            .counts
            .lock()
            .expect("not poisoned")
            .entry(name.to_owned())
            .or_default() += 1;
    }
    fn count(&self, name: &str) -> u64 {
        self.counts
            .lock()
            .expect("not poisoned")
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

impl MetricsReporter for Calls {
    fn allow_conn(&self, _: Direction, _: bool) {
        self.hit("allow_conn");
    }
    fn block_conn(&self, _: Direction, _: bool) {
        self.hit("block_conn");
    }
    fn allow_stream(&self, _: &PeerId, _: Direction) {
        self.hit("allow_stream");
    }
    fn block_stream(&self, _: &PeerId, _: Direction) {
        self.hit("block_stream");
    }
    fn allow_peer(&self, _: &PeerId) {
        self.hit("allow_peer");
    }
    fn block_peer(&self, _: &PeerId) {
        self.hit("block_peer");
    }
    fn allow_protocol(&self, _: &str) {
        self.hit("allow_protocol");
    }
    fn block_protocol(&self, _: &str) {
        self.hit("block_protocol");
    }
    fn block_protocol_peer(&self, _: &str, _: &PeerId) {
        self.hit("block_protocol_peer");
    }
    fn allow_service(&self, _: &str) {
        self.hit("allow_service");
    }
    fn block_service(&self, _: &str) {
        self.hit("block_service");
    }
    fn block_service_peer(&self, _: &str, _: &PeerId) {
        self.hit("block_service_peer");
    }
    fn allow_memory(&self, _: usize) {
        self.hit("allow_memory");
    }
    fn block_memory(&self, _: usize) {
        self.hit("block_memory");
    }
    fn limit_exceeded(&self, refusal: &LimitExceeded) {
        self.hit("limit_exceeded");
        self.refusals
            .lock()
            .expect("not poisoned")
            .push(refusal.clone());
    }
    fn refused_amount(&self, refusal: &LimitExceeded, asked: &rcmgr::ScopeStat) {
        self.hit("refused_amount");
        self.asked
            .lock()
            .expect("not poisoned")
            .push((refusal.refused_by().to_string(), *asked));
    }
    fn conn_memory(&self, old: u64, new: u64) {
        self.conn_memory
            .lock()
            .expect("not poisoned")
            .push((old, new));
    }
}

#[test]
fn metrics_callbacks_fire_once_per_event() {
    let mut limits = ConcreteLimitConfig::infinite();
    limits.transient.conns_inbound = 1;
    limits.protocol_peer_default.streams_inbound = 1;
    limits.service_default.streams_inbound = 1;
    limits.system.memory = 1 << 20;
    let calls = Arc::new(Calls::default());
    let rm = ResourceManager::builder(limits)
        .metrics(Arc::<Calls>::clone(&calls))
        .build()
        .expect("the manager builds");
    let endpoint = "/ip4/10.0.0.1/tcp/1".parse().expect("ma");
    let peer = PeerId::random();
    let mut conn = rm
        .open_connection(Direction::Inbound, true, &endpoint)
        .expect("the first fits");
    assert!(
        rm.open_connection(Direction::Inbound, true, &endpoint)
            .is_err()
    );
    conn.set_peer(peer).expect("unlimited");

    let span = conn.begin_span().expect("open");
    let inner = span.begin_span().expect("open");
    inner.reserve_memory(1000, Priority::ALWAYS).expect("fits");
    assert!(inner.reserve_memory(1 << 20, Priority::ALWAYS).is_err());
    drop(inner);

    let mut first = rm.open_stream(peer, Direction::Inbound).expect("unlimited");
    first.set_protocol("/p").expect("fits");
    first.set_service("s").expect("fits");
    let mut second = rm.open_stream(peer, Direction::Inbound).expect("unlimited");
    assert!(
        second.set_protocol("/p").is_err(),
        "the protocol-peer scope holds one"
    );
    let other = PeerId::random();
    let mut third = rm
        .open_stream(other, Direction::Inbound)
        .expect("unlimited");
    third.set_protocol("/p").expect("another peer");
    assert!(third.set_service("s").is_err(), "the service holds one");

    for (name, count) in [
        ("allow_conn", 1),
        ("block_conn", 1),
        ("allow_peer", 1),
        ("allow_memory", 1),
        ("block_memory", 1),
        ("allow_stream", 3),
        ("allow_protocol", 2),
        ("block_protocol_peer", 1),
        ("allow_service", 1),
        ("block_service", 1),
        ("limit_exceeded", 4),
        ("refused_amount", 4),
    ] {
        assert_eq!(calls.count(name), count, "{name}");
    }
    let refusals = calls.refusals.lock().expect("not poisoned").clone();
    let refused_by: Vec<String> = refusals
        .iter()
        .map(|r| r.refused_by().to_string())
        .collect();
    assert_eq!(
        refused_by,
        [
            "transient".to_owned(),
            "system".to_owned(),
            format!("protocol:/p.peer:{peer}"),
            "service:s".to_owned(),
        ]
    );
    assert_eq!(refusals[0].direction(), Some(Direction::Inbound));
    // What each refusal asked of the scope that refused, as go's block events carry it.
    let asked = calls.asked.lock().expect("not poisoned").clone();
    let stat = |f: fn(&mut rcmgr::ScopeStat)| {
        let mut stat = rcmgr::ScopeStat::default();
        f(&mut stat);
        stat
    };
    assert_eq!(
        asked,
        [
            (
                "transient".to_owned(),
                stat(|s| {
                    s.conns_inbound = 1;
                    s.fd = 1;
                })
            ),
            ("system".to_owned(), stat(|s| s.memory = 1 << 20)),
            (
                format!("protocol:/p.peer:{peer}"),
                stat(|s| s.streams_inbound = 1)
            ),
            ("service:s".to_owned(), stat(|s| s.streams_inbound = 1)),
        ]
    );
    drop(span);
    drop(conn);
    assert_eq!(
        *calls.conn_memory.lock().expect("not poisoned"),
        [(0, 1000), (1000, 0)],
        "the connection's own memory: the inner span's reservation, then its release"
    );
}

/// A subscriber that keeps every event's fields, as text.
#[derive(Default)]
struct Recorder(Mutex<Vec<BTreeMap<String, String>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = BTreeMap::new();
        fields.insert("level".to_owned(), event.metadata().level().to_string());
        event.record(&mut Fields(&mut fields));
        self.0.lock().expect("not poisoned").push(fields);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn refusals_are_logged_at_debug_with_go_keys_and_limits_at_info() {
    let recorder = Arc::new(Recorder::default());
    let dispatch = tracing::Dispatch::from(Arc::clone(&recorder));
    let peer = PeerId::random();
    tracing::dispatcher::with_default(&dispatch, || {
        let mut limits = ConcreteLimitConfig::infinite();
        limits.peer_default.streams_outbound = 1;
        limits.system.memory = 1000;
        let rm = ResourceManager::new(limits);
        let _held = rm.open_stream(peer, Direction::Outbound).expect("fits");
        assert!(rm.open_stream(peer, Direction::Outbound).is_err());
        assert!(rm.system().reserve_memory(999, Priority::LOW).is_err());
    });
    let events = recorder.0.lock().expect("not poisoned").clone();
    let info = &events[0];
    assert_eq!(info["level"], "INFO");
    assert_eq!(
        info["message"],
        "resource manager started with these limits"
    );
    assert!(info["system"].contains("memory: 1000"), "{info:?}");
    assert!(info.contains_key("address_limits"));

    let stream = &events[1];
    assert_eq!(stream["level"], "DEBUG");
    assert_eq!(stream["message"], "blocked stream from constraining edge");
    assert_eq!(stream["scope"], "stream-2");
    assert_eq!(stream["edge"], format!("peer:{peer}"));
    assert_eq!(stream["direction"], "outbound");
    for (key, value) in [("current", "1"), ("attempted", "1"), ("limit", "1")] {
        assert_eq!(stream[key], value, "{key}");
    }
    assert!(stream["stat"].contains("streams_outbound: 1"), "{stream:?}");

    let memory = &events[2];
    assert_eq!(memory["message"], "blocked memory reservation");
    assert_eq!(memory["scope"], "system");
    assert!(!memory.contains_key("edge"));
    for (key, value) in [("attempted", "999"), ("limit", "1000"), ("priority", "101")] {
        assert_eq!(memory[key], value, "{key}");
    }
    assert_eq!(events.len(), 3);
}
