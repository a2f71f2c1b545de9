//! `rcmgr check FILE`: is this limits file readable, and can its limits work?
//!
//! The file is read as go-libp2p reads it and built on a base: go's default limits and
//! go-libp2p's service limits scaled for the sizes given (or this machine's), as
//! `NewLimiterFromJSON` builds a file on its defaults. A file that cannot be read is an
//! error, shown at its line and column with the line itself (a byte order mark or bytes that
//! are not UTF-8 are named as such). A file that reads but holds limits that cannot work as
//! written gets warnings, each naming the field: see [`WarningKind`] for what is looked for.
//!
//! **A warning is about the file.** It names a field the file writes, and a problem the file
//! brings: one the base does not have. go's defaults have a few oddities of their own (the
//! ping protocol's per-peer memory far above the protocol's, services' per-peer memory below
//! one stream's, the service default's streams above the system's); a file that keeps them,
//! such as `rcmgr limits --format json`, is not warned about them.
//!
//! **Memory stays within a small multiple of the file's size.** The file is parsed as a
//! stream (its text is never held whole: only what it holds, the engine's
//! `PartialLimitConfig`), then read again by a pass for unknown fields that keeps only what it
//! reports; the limit of each scope it writes is built on its own, when it is checked
//! (nothing is built for the scopes it does not write), and output is bounded: at most
//! [`MAX_SHOWN`] warnings are printed, then a count of the rest. Only a file that fails to
//! parse is read whole, to show the line of the error.

use std::{collections::BTreeMap, fmt, io::Write, path::Path};

use rcmgr::{BaseLimit, ConcreteLimitConfig, ConfigError, PartialLimitConfig, limits::names_field};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::{
    cli::CheckArgs,
    error::{CliError, Status},
    scopes::{Field, ScopePath, written_scopes},
    sizing::Sizing,
    units::Count,
};

/// The most warnings `rcmgr check` prints; the rest are counted by kind.
pub const MAX_SHOWN: usize = 200;

/// How many scope names the summary lists before it says how many more there are.
const MAX_NAMED: usize = 10;

/// A kind of limit that cannot work as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum WarningKind {
    /// A limit above the same limit of a scope that every reservation here also counts
    /// against (a peer or the transient scope above the system scope, a protocol's per-peer
    /// limit above the protocol's): the larger limit is never reached.
    AboveParent,
    /// Inbound connections cannot work as the file seems to intend: blocked outright (the node
    /// can only dial out), or left at the default while the total was raised (kubo#9432).
    InboundConns,
    /// Memory that cannot serve the streams a scope admits: none at all (blockAll) where
    /// streams are allowed, or, in a scope every stream (or every stream of a peer) passes,
    /// less than one stream may use. A protocol's or service's own memory below one stream's
    /// is a choice, not a mistake, and is not warned about.
    MemoryBelowStream,
    /// An inbound or outbound limit above the scope's total: the total refuses first.
    DirectionAboveTotal,
    /// A resource every connection or stream needs is blocked in a scope they all pass.
    Blocked,
    /// A field go-libp2p does not know; it is ignored (go ignores it too). The warning says
    /// which field was probably meant.
    UnknownField,
}

impl WarningKind {
    /// A short name for output and for grep.
    pub const fn name(self) -> &'static str {
        match self {
            WarningKind::AboveParent => "above-parent",
            WarningKind::InboundConns => "inbound-conns",
            WarningKind::MemoryBelowStream => "memory-below-stream",
            WarningKind::DirectionAboveTotal => "direction-above-total",
            WarningKind::Blocked => "blocked",
            WarningKind::UnknownField => "unknown-field",
        }
    }
}

/// A limit in a file that cannot work as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// What is wrong.
    pub kind: WarningKind,
    /// The field, as a path in the file (`PeerDefault.ConnsInbound`).
    pub path: String,
    /// Why it cannot work.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "warning[{}]: {}: {}",
            self.kind.name(),
            self.path,
            self.message
        )
    }
}

/// Runs `rcmgr check`: reads the file, prints errors or warnings or a summary to `out`, and
/// returns [`Status::Errors`], [`Status::Warnings`] or [`Status::Ok`].
///
/// # Errors
///
/// Only [`CliError::Output`]: problems with the file are reported in `out` and the status.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> Result<Status, CliError> {
    let file = args.file.display();
    // Read as a stream, so the file's text is never held beside what it holds.
    let written = match PartialLimitConfig::from_json_file(&args.file) {
        Ok(written) => written,
        Err(err) => {
            match err.config() {
                Some(config) if config.line() > 0 => {
                    // The line is shown from the file, read again: a failed read holds nothing
                    // else.
                    let bytes = std::fs::read(&args.file).unwrap_or_default();
                    write_parse_error(&args.file, &bytes, config, out)?;
                }
                Some(config) => writeln!(
                    out,
                    "{file}: error: cannot read the file: {}",
                    config.message()
                )?,
                None => writeln!(out, "{file}: error: {err}")?,
            }
            return Ok(Status::Errors);
        }
    };
    // The file parsed as a limits file: a second pass over it finds what the reader skipped.
    let unknown = match std::fs::File::open(&args.file)
        .and_then(|f| unknown_fields_in(std::io::BufReader::new(f)))
    {
        Ok(unknown) => unknown,
        Err(err) => {
            writeln!(out, "{file}: error: cannot read the file again: {err}")?;
            return Ok(Status::Errors);
        }
    };
    let sizing = Sizing::resolve(args.sizing.memory, args.sizing.fds);
    let base = sizing.default_limits();

    let mut shown = 0;
    let mut by_kind: BTreeMap<WarningKind, u64> = BTreeMap::new();
    let mut failed = None;
    let mut report = |warning: Warning| {
        *by_kind.entry(warning.kind).or_default() += 1;
        if shown < MAX_SHOWN && failed.is_none() {
            shown += 1;
            if let Err(err) = writeln!(out, "{file}: {warning}") {
                failed = Some(err);
            }
        }
    };
    lint_each(&written, &base, &mut report);
    unknown.warnings(&mut report);
    if let Some(err) = failed {
        return Err(err.into());
    }
    if unknown.not_kept() > 0 {
        *by_kind.entry(WarningKind::UnknownField).or_default() += unknown.not_kept();
    }
    let total: u64 = by_kind.values().sum();
    if total > shown as u64 {
        let kinds: Vec<String> = by_kind
            .iter()
            .map(|(kind, n)| format!("{} {}", Count(*n), kind.name()))
            .collect();
        writeln!(
            out,
            "{file}: … and {} more warnings not shown ({} in all: {})",
            Count(total - shown as u64),
            Count(total),
            kinds.join(", ")
        )?;
    }

    let set = written_scopes(&written).count();
    let named: Vec<String> = written_scopes(&written)
        .take(MAX_NAMED)
        .map(|(path, _)| short(&path.to_string()))
        .collect();
    let summary = match set {
        0 => "sets no limits: the defaults apply".to_owned(),
        n if n > MAX_NAMED => format!(
            "sets {} scopes ({}, and {} more)",
            Count(n as u64),
            named.join(", "),
            Count((n - MAX_NAMED) as u64)
        ),
        n => format!(
            "sets {n} scope{} ({})",
            if n == 1 { "" } else { "s" },
            named.join(", ")
        ),
    };
    writeln!(
        out,
        "{file}: {summary}; checked against go-libp2p's default limits and service limits for \
         {sizing}"
    )?;
    if total == 0 {
        writeln!(out, "{file}: ok")?;
        Ok(Status::Ok)
    } else {
        writeln!(
            out,
            "{file}: {} warning{}",
            Count(total),
            if total == 1 { "" } else { "s" }
        )?;
        Ok(Status::Warnings)
    }
}

/// `text` for a message, cut to at most 64 characters.
fn short(text: &str) -> String {
    const MOST: usize = 64;
    match text.char_indices().nth(MOST) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A parse error at its line and column, with (a window of) the line and a caret under the
/// column. `bytes` are the file's: the line is shown even if it is not UTF-8.
fn write_parse_error(
    path: &Path,
    bytes: &[u8],
    error: &ConfigError,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    /// Characters of the line shown on each side of the column.
    const WINDOW: usize = 60;
    let file = path.display();
    let (line, column) = (error.line(), error.column());
    let location = if line > 0 {
        format!("{file}:{line}:{column}")
    } else {
        file.to_string()
    };
    let field = if error.path().is_empty() {
        String::new()
    } else {
        format!("{}: ", error.path())
    };
    writeln!(out, "{location}: error: {field}{}", error.message())?;
    let Some(source_line) = line
        .checked_sub(1)
        .and_then(|index| bytes.split(|b| *b == b'\n').nth(index))
    else {
        return Ok(());
    };
    let source_line = String::from_utf8_lossy(source_line);
    let chars: Vec<char> = source_line.trim_end_matches('\r').chars().collect();
    let at = column.saturating_sub(1).min(chars.len());
    let start = at.saturating_sub(WINDOW);
    let end = (at + WINDOW).min(chars.len());
    let mut shown: String = chars[start..end]
        .iter()
        .map(|c| {
            if c.is_control() && *c != '\t' {
                '�'
            } else {
                *c
            }
        })
        .collect();
    let mut caret: String = chars[start..at]
        .iter()
        .map(|c| if *c == '\t' { '\t' } else { ' ' })
        .collect();
    if start > 0 {
        shown.insert(0, '…');
        caret.insert(0, ' ');
    }
    if end < chars.len() {
        shown.push('…');
    }
    let number = line.to_string();
    let gutter = " ".repeat(number.len());
    writeln!(out, " {number} | {shown}")?;
    writeln!(out, " {gutter} | {caret}^")?;
    Ok(())
}

/// The warnings about the limits a file writes (not its unknown fields, see
/// [`unknown_fields`]), built on `base`; a convenience over [`lint_each`].
///
/// ```
/// use rcmgr::{PartialLimitConfig, ScalingLimitConfig};
/// use rcmgr_cli::commands::check::{lint, WarningKind};
/// let json = r#"{"System": {"StreamsInbound": 100}, "PeerDefault": {"StreamsInbound": 200}}"#;
/// let written = PartialLimitConfig::from_json_str(json)?;
/// let base = ScalingLimitConfig::default().scale(1 << 30, 1024);
/// let warnings = lint(&written, &base);
/// assert_eq!(warnings.len(), 1);
/// assert_eq!(warnings[0].kind, WarningKind::AboveParent);
/// assert_eq!(warnings[0].path, "PeerDefault.StreamsInbound");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn lint(written: &PartialLimitConfig, base: &ConcreteLimitConfig) -> Vec<Warning> {
    let mut warnings = Vec::new();
    lint_each(written, base, &mut |warning| warnings.push(warning));
    warnings
}

/// Calls `each` with every warning about the limits `written` writes, built on `base` (see the
/// module docs: a field the file writes, with a problem the base does not have), scope by
/// scope in go's order.
pub fn lint_each(
    written: &PartialLimitConfig,
    base: &ConcreteLimitConfig,
    each: &mut dyn FnMut(Warning),
) {
    let built = Built::new(written, base);
    for (path, limits) in written_scopes(written) {
        for field in Field::ALL {
            if field.written(limits).is_default() {
                continue;
            }
            for check in CHECKS {
                let Some(message) = check(&path, field, &built, base) else {
                    continue;
                };
                if check(&path, field, base, base).is_some() {
                    // The base has this problem too: not the file's doing.
                    continue;
                }
                each(Warning {
                    kind: message.0,
                    path: format!("{}.{field}", short(&path.to_string())),
                    message: message.1,
                });
            }
        }
    }
}

/// Where the checks read limits: the limit of any scope.
trait Limits {
    fn limit(&self, path: &ScopePath) -> BaseLimit;
}

impl Limits for ConcreteLimitConfig {
    fn limit(&self, path: &ScopePath) -> BaseLimit {
        path.limit_in(self)
    }
}

/// The limits a file gives over a base, scope by scope, as `PartialLimitConfig::build` gives
/// them, without building every entry of the file at once.
struct Built<'a> {
    written: &'a PartialLimitConfig,
    base: &'a ConcreteLimitConfig,
    /// The file's fixed scopes and defaults built on the base (with the base's own entries).
    fixed: ConcreteLimitConfig,
}

impl<'a> Built<'a> {
    fn new(written: &'a PartialLimitConfig, base: &'a ConcreteLimitConfig) -> Self {
        let mut fixed = PartialLimitConfig::default();
        fixed.system = written.system;
        fixed.transient = written.transient;
        fixed.allowlisted_system = written.allowlisted_system;
        fixed.allowlisted_transient = written.allowlisted_transient;
        fixed.service_default = written.service_default;
        fixed.service_peer_default = written.service_peer_default;
        fixed.protocol_default = written.protocol_default;
        fixed.protocol_peer_default = written.protocol_peer_default;
        fixed.peer_default = written.peer_default;
        fixed.conn = written.conn;
        fixed.stream = written.stream;
        Built {
            written,
            base,
            fixed: fixed.build(base),
        }
    }
}

impl Limits for Built<'_> {
    /// An entry the file writes is built on the base's entry for the same key when there is
    /// one, else on the file's built default for its kind (go's `buildMapWithDefault`); any
    /// other scope has the limit the file's fixed part gives it.
    fn limit(&self, path: &ScopePath) -> BaseLimit {
        let (w, b, f) = (self.written, self.base, &self.fixed);
        let entry = |written: Option<&rcmgr::ResourceLimits>, base: Option<&BaseLimit>, default| {
            written.map(|limits| limits.build(base.unwrap_or(default)))
        };
        let built = match path {
            ScopePath::Service(name) => {
                entry(w.service.get(name), b.service.get(name), &f.service_default)
            }
            ScopePath::ServicePeer(name) => entry(
                w.service_peer.get(name),
                b.service_peer.get(name),
                &f.service_peer_default,
            ),
            ScopePath::Protocol(name) => entry(
                w.protocol.get(name),
                b.protocol.get(name),
                &f.protocol_default,
            ),
            ScopePath::ProtocolPeer(name) => entry(
                w.protocol_peer.get(name),
                b.protocol_peer.get(name),
                &f.protocol_peer_default,
            ),
            ScopePath::Peer(peer) => entry(w.peer.get(peer), b.peer.get(peer), &f.peer_default),
            _ => None,
        };
        built.unwrap_or_else(|| path.limit_in(f))
    }
}

/// A check: the problem with `field` of the scope at `path` in `limits` (`base` for what
/// compares with it), as a kind and a message, or `None`.
type Check =
    fn(&ScopePath, Field, &dyn Limits, &ConcreteLimitConfig) -> Option<(WarningKind, String)>;

/// Every check, in the order their warnings are listed for a field.
const CHECKS: [Check; 6] = [
    above_parent,
    inbound_blocked,
    inbound_left_behind,
    memory_below_stream,
    direction_above_total,
    blocked,
];

/// A limit above the same limit of the scope above it.
fn above_parent(
    path: &ScopePath,
    field: Field,
    limits: &dyn Limits,
    _: &ConcreteLimitConfig,
) -> Option<(WarningKind, String)> {
    let parent = path.parent()?;
    let (value, above) = (
        field.of(&limits.limit(path)),
        field.of(&limits.limit(&parent)),
    );
    if value >= BaseLimit::UNLIMITED || value <= above {
        return None;
    }
    let larger = if *path == ScopePath::Transient {
        "the transient scope is larger than the system scope, which"
    } else {
        "every reservation here also counts there, and that limit"
    };
    Some((
        WarningKind::AboveParent,
        format!(
            "{} is above {}.{field} ({}): {larger} refuses first, so this limit is never reached",
            field.show(value),
            short(&parent.to_string()),
            field.show(above),
        ),
    ))
}

/// Whether every connection passes the scope at `path` (or every one of a peer without an
/// entry of its own).
fn on_every_connection(path: &ScopePath) -> bool {
    matches!(
        path,
        ScopePath::System | ScopePath::Transient | ScopePath::PeerDefault | ScopePath::Conn
    )
}

/// Inbound connections blocked where every connection passes.
fn inbound_blocked(
    path: &ScopePath,
    field: Field,
    limits: &dyn Limits,
    _: &ConcreteLimitConfig,
) -> Option<(WarningKind, String)> {
    let limit = limits.limit(path);
    if field != Field::ConnsInbound
        || !on_every_connection(path)
        || limit.conns_inbound != 0
        || limit.conns == 0
    {
        return None;
    }
    let whose = if *path == ScopePath::PeerDefault {
        "of every peer without an entry of its own"
    } else {
        "the node would accept"
    };
    Some((
        WarningKind::InboundConns,
        format!("blockAll refuses every inbound connection {whose}: the node can only dial out"),
    ))
}

/// A total raised above the base while the inbound limit stays below it (kubo#9432).
fn inbound_left_behind(
    path: &ScopePath,
    field: Field,
    limits: &dyn Limits,
    base: &ConcreteLimitConfig,
) -> Option<(WarningKind, String)> {
    if field != Field::Conns || !matches!(path, ScopePath::System | ScopePath::Transient) {
        return None;
    }
    let (limit, before) = (limits.limit(path), path.limit_in(base));
    let left_behind = limit.conns > before.conns
        && limit.conns_inbound <= before.conns_inbound
        && limit.conns_inbound < limit.conns;
    left_behind.then(|| {
        (
            WarningKind::InboundConns,
            format!(
                "raised to {} while {path}.ConnsInbound stays at {}: inbound connections are \
                 still refused past {} (\"cannot reserve inbound connection\", kubo#9432); \
                 raise ConnsInbound as well",
                field.show(limit.conns),
                field.show(limit.conns_inbound),
                field.show(limit.conns_inbound)
            ),
        )
    })
}

/// Memory that cannot serve the streams the scope admits.
fn memory_below_stream(
    path: &ScopePath,
    field: Field,
    limits: &dyn Limits,
    _: &ConcreteLimitConfig,
) -> Option<(WarningKind, String)> {
    if field != Field::Memory || !path.holds_streams() || *path == ScopePath::Stream {
        return None;
    }
    let limit = limits.limit(path);
    let admits_streams = limit.streams > 0 && (limit.streams_inbound | limit.streams_outbound) > 0;
    if !admits_streams {
        return None;
    }
    let stream_memory = limits.limit(&ScopePath::Stream).memory;
    let message = if limit.memory == 0 {
        "blockAll refuses every memory reservation: streams in this scope cannot buffer anything"
            .to_owned()
    } else {
        let on_every_stream = matches!(
            path,
            ScopePath::System | ScopePath::Transient | ScopePath::PeerDefault | ScopePath::Peer(_)
        );
        if !on_every_stream || limit.memory >= stream_memory {
            return None;
        }
        format!(
            "{} is below Stream.Memory ({}), what one stream may use, and every stream {} passes \
             this scope: not even one stream can get the memory its own limit allows",
            Field::Memory.show(limit.memory),
            Field::Memory.show(stream_memory),
            if matches!(path, ScopePath::PeerDefault | ScopePath::Peer(_)) {
                "of such a peer"
            } else {
                "of the node"
            }
        )
    };
    Some((WarningKind::MemoryBelowStream, message))
}

/// An inbound or outbound limit above the scope's total.
fn direction_above_total(
    path: &ScopePath,
    field: Field,
    limits: &dyn Limits,
    _: &ConcreteLimitConfig,
) -> Option<(WarningKind, String)> {
    let total = field.total()?;
    let limit = limits.limit(path);
    let (value, cap) = (field.of(&limit), total.of(&limit));
    (value < BaseLimit::UNLIMITED && value > cap).then(|| {
        (
            WarningKind::DirectionAboveTotal,
            format!(
                "{} is above {}.{total} ({}): the total refuses first, so this limit is never reached",
                field.show(value),
                short(&path.to_string()),
                total.show(cap)
            ),
        )
    })
}

/// A blockAll on something every connection or stream needs, in a scope they all pass.
/// Inbound connections and memory have warnings of their own.
fn blocked(
    path: &ScopePath,
    field: Field,
    limits: &dyn Limits,
    _: &ConcreteLimitConfig,
) -> Option<(WarningKind, String)> {
    const STREAMS: [Field; 3] = [
        Field::Streams,
        Field::StreamsInbound,
        Field::StreamsOutbound,
    ];
    const CONNS: [Field; 3] = [Field::Conns, Field::ConnsOutbound, Field::Fd];
    let (applies, whose) = match path {
        ScopePath::System | ScopePath::Transient => (
            STREAMS.contains(&field) || CONNS.contains(&field),
            "the node would take",
        ),
        ScopePath::PeerDefault => (
            STREAMS.contains(&field) || CONNS.contains(&field),
            "of every peer without an entry of its own",
        ),
        ScopePath::Conn => (CONNS.contains(&field), "the node would take"),
        ScopePath::Stream => (STREAMS.contains(&field), "the node would take"),
        _ => (false, ""),
    };
    if !applies || field.of(&limits.limit(path)) != 0 {
        return None;
    }
    let what = match field {
        Field::Streams => "stream",
        Field::StreamsInbound => "inbound stream",
        Field::StreamsOutbound => "outbound stream",
        Field::Conns => "connection",
        Field::ConnsOutbound => "outbound connection",
        _ => "connection that needs a file descriptor (TCP, WebSocket)",
    };
    Some((
        WarningKind::Blocked,
        format!("blockAll refuses every {what} {whose}"),
    ))
}

/// The scopes with a fixed name in go's limit files.
const FIXED_SCOPES: [&str; 11] = [
    "System",
    "Transient",
    "AllowlistedSystem",
    "AllowlistedTransient",
    "ServiceDefault",
    "ServicePeerDefault",
    "ProtocolDefault",
    "ProtocolPeerDefault",
    "PeerDefault",
    "Conn",
    "Stream",
];

/// The per-key maps of go's limit files.
const SCOPE_MAPS: [&str; 5] = ["Service", "ServicePeer", "Protocol", "ProtocolPeer", "Peer"];

/// The field names of one scope's limits.
const LIMIT_FIELDS: [&str; 8] = [
    "Streams",
    "StreamsInbound",
    "StreamsOutbound",
    "Conns",
    "ConnsInbound",
    "ConnsOutbound",
    "FD",
    "Memory",
];

/// The fields of a limits file that go-libp2p does not know, found by [`unknown_fields`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnknownFields {
    /// The first [`MAX_SHOWN`] of them, in file order.
    pub first: Vec<UnknownField>,
    /// How many there are in all.
    pub count: u64,
}

impl UnknownFields {
    /// Calls `each` with a warning for each field in [`first`](Self::first).
    pub fn warnings(&self, each: &mut dyn FnMut(Warning)) {
        for field in &self.first {
            each(field.warning());
        }
    }

    /// How many are not in [`first`](Self::first).
    pub fn not_kept(&self) -> u64 {
        self.count - self.first.len() as u64
    }
}

/// A field of a limits file that go-libp2p does not know, and what was probably meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownField {
    /// Where it is, as a path (`System.ConnInbound`, `Sytem`).
    pub path: String,
    /// What it probably is instead.
    pub hint: Option<Hint>,
}

/// What an unknown field probably is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hint {
    /// A misspelling of this field or scope.
    DidYouMean(&'static str),
    /// A limit written outside any scope (at the top level of the file).
    LimitOutsideScope(&'static str),
    /// A scope written inside another scope's limits.
    ScopeInsideScope(&'static str),
}

impl UnknownField {
    fn warning(&self) -> Warning {
        let mut message =
            "not a field of a limits file: ignored (go-libp2p ignores it too)".to_owned();
        match &self.hint {
            Some(Hint::DidYouMean(name)) => message.push_str(&format!("; did you mean {name}?")),
            Some(Hint::LimitOutsideScope(name)) => message.push_str(&format!(
                "; {name} is a limit, and limits go inside a scope, for example \
                 {{\"System\": {{\"{name}\": …}}}}"
            )),
            Some(Hint::ScopeInsideScope(name)) => message.push_str(&format!(
                "; {name} is a scope, and scopes go at the top level of the file"
            )),
            None => {}
        }
        Warning {
            kind: WarningKind::UnknownField,
            path: self.path.clone(),
            message,
        }
    }
}

/// The closest of `names` to `key`, if it is close enough to be a misspelling: at most one
/// edit for names of up to four letters, two for longer ones (three from nine letters on),
/// ignoring case, `_`, `-` and spaces.
///
/// ```
/// use rcmgr_cli::commands::check::suggest;
/// let fields = ["Streams", "StreamsInbound", "Conns", "ConnsInbound", "FD", "Memory"];
/// assert_eq!(suggest("ConnInbound", &fields), Some("ConnsInbound"));
/// assert_eq!(suggest("conns_inbound", &fields), Some("ConnsInbound"));
/// assert_eq!(suggest("Protocols", &["Protocol", "ProtocolPeer"]), Some("Protocol"));
/// assert_eq!(suggest("Bandwidth", &fields), None);
/// ```
pub fn suggest(key: &str, names: &[&'static str]) -> Option<&'static str> {
    /// Keys longer than this are nobody's misspelling (and would cost time to compare).
    const LONGEST: usize = 64;
    let normal = |text: &str| -> Vec<char> {
        text.chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    if key.chars().count() > LONGEST {
        return None;
    }
    let key = normal(key);
    names
        .iter()
        .map(|name| (edit_distance(&key, &normal(name)), *name))
        .filter(|(distance, name)| {
            let allowed = match name.len() {
                0..=4 => 1,
                5..=8 => 2,
                _ => 3,
            };
            *distance <= allowed && *distance < key.len().max(1)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// Levenshtein distance between two short strings.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The fields of the limits file `text` (which must be JSON: call this once it has parsed as
/// a limits file) that go-libp2p does not know, each with what was probably meant. One pass
/// over the text that keeps only what it reports.
///
/// ```
/// use rcmgr_cli::commands::check::{unknown_fields, Hint};
/// let found = unknown_fields(r#"{"Sytem": {}, "System": {"ConnInbound": 5}, "Protocols": {}}"#);
/// let paths: Vec<&str> = found.first.iter().map(|f| f.path.as_str()).collect();
/// assert_eq!(paths, ["Sytem", "System.ConnInbound", "Protocols"]);
/// assert_eq!(found.first[1].hint, Some(Hint::DidYouMean("ConnsInbound")));
/// assert_eq!(found.first[2].hint, Some(Hint::DidYouMean("Protocol")));
/// ```
pub fn unknown_fields(text: &str) -> UnknownFields {
    let mut found = UnknownFields::default();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // The text parsed as a limits file, so the scan cannot fail; if it did, what was found
    // so far is all there is to report.
    let _ = Document(&mut found).deserialize(&mut deserializer);
    found
}

/// [`unknown_fields`] of a limits file read from `reader`, as a stream.
///
/// # Errors
///
/// A read error of `reader`. (A document that is not JSON ends the scan where it stops being
/// JSON; check that it parses as a limits file first.)
pub fn unknown_fields_in(reader: impl std::io::Read) -> std::io::Result<UnknownFields> {
    let mut found = UnknownFields::default();
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    match Document(&mut found).deserialize(&mut deserializer) {
        Err(err) if err.is_io() => Err(err.into()),
        _ => Ok(found),
    }
}

impl UnknownFields {
    fn add(&mut self, path: impl FnOnce() -> String, hint: Option<Hint>) {
        self.count += 1;
        if self.first.len() < MAX_SHOWN {
            self.first.push(UnknownField { path: path(), hint });
        }
    }
}

/// A key as a path segment: itself if it is a plain word, else quoted in brackets (as the
/// engine's error paths show keys), cut to 64 characters.
fn segment(key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        short(key)
    } else {
        format!("[{:?}]", short(key))
    }
}

/// The top level of a limits file.
struct Document<'a>(&'a mut UnknownFields);

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a limits file")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if let Some(scope) = FIXED_SCOPES.iter().find(|name| names_field(&key, name)) {
                map.next_value_seed(ScopeLimits {
                    found: self.0,
                    scope: scope.to_string(),
                })?;
            } else if let Some(kind) = SCOPE_MAPS.iter().find(|name| names_field(&key, name)) {
                map.next_value_seed(Entries {
                    found: self.0,
                    kind,
                })?;
            } else {
                let hint = suggest(&key, &FIXED_SCOPES)
                    .or_else(|| suggest(&key, &SCOPE_MAPS))
                    .map(Hint::DidYouMean)
                    .or_else(|| {
                        LIMIT_FIELDS
                            .iter()
                            .copied()
                            .find(|name| names_field(&key, name))
                            .or_else(|| suggest(&key, &LIMIT_FIELDS))
                            .map(Hint::LimitOutsideScope)
                    });
                self.0.add(|| segment(&key), hint);
                map.next_value_seed(Skip)?;
            }
        }
        Ok(())
    }
}

/// The entries of a per-key map (`Protocol`, `Peer`, ...).
struct Entries<'a> {
    found: &'a mut UnknownFields,
    kind: &'static str,
}

impl<'de> DeserializeSeed<'de> for Entries<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Entries<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of limits")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            map.next_value_seed(ScopeLimits {
                found: self.found,
                scope: format!("{}[{:?}]", self.kind, short(&key)),
            })?;
        }
        Ok(())
    }
}

/// One scope's limits.
struct ScopeLimits<'a> {
    found: &'a mut UnknownFields,
    scope: String,
}

impl<'de> DeserializeSeed<'de> for ScopeLimits<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScopeLimits<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of limits")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !LIMIT_FIELDS.iter().any(|name| names_field(&key, name)) {
                let hint = suggest(&key, &LIMIT_FIELDS)
                    .map(Hint::DidYouMean)
                    .or_else(|| {
                        FIXED_SCOPES
                            .iter()
                            .chain(&SCOPE_MAPS)
                            .find(|name| names_field(&key, name))
                            .map(|name| Hint::ScopeInsideScope(name))
                    });
                let scope = &self.scope;
                self.found
                    .add(|| format!("{scope}.{}", segment(&key)), hint);
            }
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// Skips any value through `deserialize_any`, so serde_json's nesting limit applies.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rcmgr::ScalingLimitConfig;

    use super::*;
    use crate::scopes::scopes;

    fn base() -> ConcreteLimitConfig {
        ScalingLimitConfig::default()
            .with_libp2p_defaults()
            .scale(8 << 30, 16384)
    }

    /// The warnings for `json` built on go's defaults for 8 GiB and 16384 descriptors, as
    /// (kind, path) pairs.
    fn warnings_for(json: &str) -> Vec<(WarningKind, String)> {
        let written = PartialLimitConfig::from_json_str(json).expect("a limits file");
        let mut all = Vec::new();
        lint_each(&written, &base(), &mut |w| all.push((w.kind, w.path)));
        unknown_fields(json).warnings(&mut |w| all.push((w.kind, w.path)));
        all
    }

    fn one(kind: WarningKind, path: &str) -> Vec<(WarningKind, String)> {
        vec![(kind, path.to_owned())]
    }

    #[test]
    fn defaults_and_sensible_files_have_no_warnings() {
        assert!(warnings_for("{}").is_empty());
        assert!(warnings_for("null").is_empty());
        let kubo_like = r#"{"System": {"Memory": "2147483648", "FD": 8192,
            "Conns": "unlimited", "ConnsInbound": 1000, "ConnsOutbound": "unlimited",
            "Streams": "unlimited", "StreamsInbound": "unlimited", "StreamsOutbound": "unlimited"},
            "Peer": {"QmVvtzcZgCkMnSFf2dnrBPXrWuNFWNM9J3MpZQCvWPuVZf": {"Conns": "unlimited"}}}"#;
        assert_eq!(warnings_for(kubo_like), vec![]);
    }

    #[test]
    fn the_base_itself_written_out_has_no_warnings() {
        // go's defaults trip several checks; a file that keeps them is not warned about them.
        let base = base();
        let own = base.to_partial().to_json_pretty();
        assert_eq!(warnings_for(&own), vec![]);
        // The same defaults do have those oddities: checked against nothing, they show.
        let written = PartialLimitConfig::from_json_str(&own).expect("reads");
        assert!(!lint(&written, &ConcreteLimitConfig::infinite()).is_empty());
    }

    #[test]
    fn the_readme_ping_fix_has_no_warnings() {
        let fix = r#"{"ProtocolPeer": {"/ipfs/ping/1.0.0": {"Memory": "1048576"}}}"#;
        assert_eq!(warnings_for(fix), vec![]);
    }

    #[test]
    fn a_peer_or_transient_limit_above_the_system_is_never_reached() {
        assert_eq!(
            warnings_for(r#"{"PeerDefault": {"StreamsInbound": 100000, "Streams": "unlimited"}}"#),
            one(WarningKind::AboveParent, "PeerDefault.StreamsInbound")
        );
        assert_eq!(
            warnings_for(r#"{"Transient": {"Memory": "100000000000"}}"#),
            one(WarningKind::AboveParent, "Transient.Memory")
        );
        assert_eq!(
            warnings_for(
                r#"{"ProtocolPeer": {"/my/app": {"StreamsInbound": 3000, "Streams": "unlimited"}}}"#
            ),
            one(
                WarningKind::AboveParent,
                r#"ProtocolPeer["/my/app"].StreamsInbound"#
            )
        );
        // Unlimited below a limited parent says "leave it to the parent": no warning.
        assert!(warnings_for(r#"{"PeerDefault": {"Conns": "unlimited"}}"#).is_empty());
        // Lowering ping's per-peer memory, still above the protocol's, is not the file's
        // problem: the base's ping per-peer memory is above it already.
        assert!(
            warnings_for(r#"{"ProtocolPeer": {"/ipfs/ping/1.0.0": {"Memory": "4294967296"}}}"#)
                .is_empty()
        );
    }

    #[test]
    fn inbound_connections_blocked_or_left_behind() {
        assert_eq!(
            warnings_for(r#"{"System": {"ConnsInbound": "blockAll"}}"#),
            one(WarningKind::InboundConns, "System.ConnsInbound")
        );
        assert_eq!(
            warnings_for(r#"{"System": {"Conns": 4000}}"#),
            one(WarningKind::InboundConns, "System.Conns")
        );
        assert!(warnings_for(r#"{"System": {"Conns": 4000, "ConnsInbound": 2000}}"#).is_empty());
    }

    #[test]
    fn memory_that_cannot_serve_streams() {
        assert_eq!(
            warnings_for(r#"{"PeerDefault": {"Memory": "1048576"}}"#),
            one(WarningKind::MemoryBelowStream, "PeerDefault.Memory")
        );
        assert_eq!(
            warnings_for(r#"{"System": {"Memory": 0}}"#),
            one(WarningKind::MemoryBelowStream, "System.Memory")
        );
        assert_eq!(
            warnings_for(r#"{"Protocol": {"/x": {"Memory": "blockAll"}}}"#),
            one(WarningKind::MemoryBelowStream, r#"Protocol["/x"].Memory"#)
        );
        // A protocol's memory below one stream's is a budget, not a mistake; no memory for a
        // protocol that takes no streams either.
        assert!(warnings_for(r#"{"Protocol": {"/x": {"Memory": "65536"}}}"#).is_empty());
        assert!(warnings_for(r#"{"Protocol": {"/x": {"Memory": 0, "Streams": 0}}}"#).is_empty());
    }

    #[test]
    fn direction_above_total_and_blocked_paths() {
        assert_eq!(
            warnings_for(r#"{"ProtocolDefault": {"Streams": 100, "StreamsInbound": 200}}"#),
            one(
                WarningKind::DirectionAboveTotal,
                "ProtocolDefault.StreamsInbound"
            )
        );
        assert_eq!(
            warnings_for(r#"{"Stream": {"StreamsOutbound": "blockAll"}}"#),
            one(WarningKind::Blocked, "Stream.StreamsOutbound")
        );
        assert_eq!(
            warnings_for(r#"{"Conn": {"FD": 0}}"#),
            one(WarningKind::Blocked, "Conn.FD")
        );
        // Blocking one protocol or one peer is a choice, not a mistake.
        assert!(warnings_for(r#"{"Protocol": {"/x": {"Streams": 0}}}"#).is_empty());
    }

    #[test]
    fn unknown_fields_are_named_with_their_path_and_what_was_meant() {
        let found = unknown_fields(
            r#"{"Sytem": {}, "system": {"ConnInbound": 5, "PeerDefault": {}}, "Protocols": {},
                "Protocol": {"/x": {"Foo": 1, "Stream": 2}}, "ConnsInbound": 3, "Bandwidth": 1}"#,
        );
        let got: Vec<(&str, Option<Hint>)> = found
            .first
            .iter()
            .map(|f| (f.path.as_str(), f.hint.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("Sytem", Some(Hint::DidYouMean("System"))),
                ("System.ConnInbound", Some(Hint::DidYouMean("ConnsInbound"))),
                (
                    "System.PeerDefault",
                    Some(Hint::ScopeInsideScope("PeerDefault"))
                ),
                ("Protocols", Some(Hint::DidYouMean("Protocol"))),
                (r#"Protocol["/x"].Foo"#, None),
                (
                    r#"Protocol["/x"].Stream"#,
                    Some(Hint::DidYouMean("Streams"))
                ),
                (
                    "ConnsInbound",
                    Some(Hint::LimitOutsideScope("ConnsInbound"))
                ),
                ("Bandwidth", None),
            ]
        );
        assert_eq!(found.count, 8);
        let message = found.first[1].warning().to_string();
        assert!(message.ends_with("did you mean ConnsInbound?"), "{message}");
    }

    #[test]
    fn built_one_scope_at_a_time_is_the_whole_build() {
        let written = PartialLimitConfig::from_json_str(
            r#"{"ServiceDefault": {"Memory": "1048576"}, "Service": {"libp2p.ping": {"FD": 3},
                "mine": {"Streams": 7}}, "ProtocolPeerDefault": {"Streams": 5},
                "ProtocolPeer": {"/ipfs/ping/1.0.0": {"StreamsInbound": 1}, "/new": {}},
                "Peer": {"QmVvtzcZgCkMnSFf2dnrBPXrWuNFWNM9J3MpZQCvWPuVZf": {"Conns": 2}},
                "Conn": {"Memory": "1024"}}"#,
        )
        .expect("a limits file");
        let base = base();
        let whole = written.build(&base);
        let lazy = Built::new(&written, &base);
        let rows = scopes(&whole, &written);
        assert!(rows.len() > 20);
        for row in rows {
            assert_eq!(lazy.limit(&row.path), row.built, "{}", row.path);
        }
        for path in [
            ScopePath::Service("unknown".into()),
            ScopePath::Peer(
                "12D3KooWSJcRGtn1PxcVurHrjtT7EoUnn4w2y8e7MK2cnjSGEwwM"
                    .parse()
                    .expect("a peer ID"),
            ),
        ] {
            assert_eq!(lazy.limit(&path), path.limit_in(&whole), "{path}");
        }
    }
}
