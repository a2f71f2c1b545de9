//! `rcmgr check FILE`: is this limits file readable, and can its limits work?
//!
//! The file is read as go-libp2p reads it and built on the default limits (go's
//! `NewLimiterFromJSON`). A file that cannot be read is an error, shown at its line and
//! column. A file that reads but holds limits that cannot work as written gets warnings, each
//! naming the field: see [`WarningKind`] for what is looked for. Only values the file writes
//! are judged: go's own defaults are taken as they are.

use std::{fmt, io::Write, path::Path};

use rcmgr::{BaseLimit, ConcreteLimitConfig, ConfigError, PartialLimitConfig, limits::names_field};
use serde_json::Value;

use crate::{
    cli::CheckArgs,
    error::{CliError, Status},
    scopes::{Field, ScopeLimits, ScopePath, scopes},
    sizing::{LimitsSource, Sizing},
};

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
    /// A scope that holds streams with less memory than one stream may use, or none at all.
    MemoryBelowStream,
    /// An inbound or outbound limit above the scope's total: the total refuses first.
    DirectionAboveTotal,
    /// A resource every connection or stream needs is blocked in a scope they all pass.
    Blocked,
    /// A field go-libp2p does not know; it is ignored (go ignores it too).
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
    let text = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(err) => {
            writeln!(out, "{file}: error: cannot read the file: {err}")?;
            return Ok(Status::Errors);
        }
    };
    let written = match PartialLimitConfig::from_json_str(&text) {
        Ok(written) => written,
        Err(err) => {
            match err.config() {
                Some(config) => write_parse_error(&args.file, &text, config, out)?,
                None => writeln!(out, "{file}: error: {err}")?,
            }
            return Ok(Status::Errors);
        }
    };
    let sizing = Sizing::resolve(args.sizing.memory, args.sizing.fds);
    let source = LimitsSource {
        sizing,
        file: Some((args.file.clone(), written.clone())),
    };
    let defaults = sizing.default_limits();
    let built = written.build(&defaults);
    // The text parsed as a limits file, so it is JSON; an empty document is `null`.
    let document: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let warnings = lint(&written, &built, &defaults, &document);
    for warning in &warnings {
        writeln!(out, "{file}: {warning}")?;
    }
    let set: Vec<String> = scopes(&built, &written)
        .iter()
        .filter(|scope| scope.is_written())
        .map(|scope| scope.path.to_string())
        .collect();
    let summary = match set.len() {
        0 => "sets no limits: the defaults apply".to_owned(),
        n => format!(
            "sets {n} scope{} ({})",
            if n == 1 { "" } else { "s" },
            set.join(", ")
        ),
    };
    writeln!(
        out,
        "{file}: {summary}; checked against {}",
        source.describe()
    )?;
    if warnings.is_empty() {
        writeln!(out, "{file}: ok")?;
        Ok(Status::Ok)
    } else {
        let n = warnings.len();
        writeln!(out, "{file}: {n} warning{}", if n == 1 { "" } else { "s" })?;
        Ok(Status::Warnings)
    }
}

/// A parse error at its line and column, with the line and a caret under the column.
fn write_parse_error(
    path: &Path,
    text: &str,
    error: &ConfigError,
    out: &mut dyn Write,
) -> Result<(), CliError> {
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
    if let Some(source_line) = line
        .checked_sub(1)
        .and_then(|index| text.lines().nth(index))
    {
        let number = line.to_string();
        let gutter = " ".repeat(number.len());
        let caret_at = source_line
            .chars()
            .take(column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect::<String>();
        writeln!(out, " {number} | {source_line}")?;
        writeln!(out, " {gutter} | {caret_at}^")?;
    }
    Ok(())
}

/// The warnings for a file that has been read: `written` is what it says, `built` the limits
/// it gives over `defaults`, `document` its JSON (for fields the reader skips).
///
/// ```
/// use rcmgr::{PartialLimitConfig, ScalingLimitConfig};
/// use rcmgr_cli::commands::check::{lint, WarningKind};
/// let json = r#"{"System": {"StreamsInbound": 100}, "PeerDefault": {"StreamsInbound": 200}}"#;
/// let written = PartialLimitConfig::from_json_str(json)?;
/// let defaults = ScalingLimitConfig::default().scale(1 << 30, 1024);
/// let warnings = lint(&written, &written.build(&defaults), &defaults, &serde_json::from_str(json)?);
/// assert_eq!(warnings.len(), 1);
/// assert_eq!(warnings[0].kind, WarningKind::AboveParent);
/// assert_eq!(warnings[0].path, "PeerDefault.StreamsInbound");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn lint(
    written: &PartialLimitConfig,
    built: &ConcreteLimitConfig,
    defaults: &ConcreteLimitConfig,
    document: &Value,
) -> Vec<Warning> {
    let rows = scopes(built, written);
    let mut warnings = Vec::new();
    for row in &rows {
        above_parent(row, built, &mut warnings);
        inbound_conns(row, defaults, &mut warnings);
        memory_below_stream(row, built.stream.memory, &mut warnings);
        direction_above_total(row, &mut warnings);
        blocked(row, &mut warnings);
    }
    warnings.extend(unknown_fields(document).into_iter().map(|path| Warning {
        kind: WarningKind::UnknownField,
        path,
        message: "not a field of a limits file: ignored (go-libp2p ignores it too)".to_owned(),
    }));
    warnings
}

fn warn(row: &ScopeLimits, field: Field, kind: WarningKind, message: String) -> Warning {
    Warning {
        kind,
        path: format!("{}.{field}", row.path),
        message,
    }
}

/// A written limit above the same limit of the scope above it.
fn above_parent(row: &ScopeLimits, built: &ConcreteLimitConfig, warnings: &mut Vec<Warning>) {
    let Some(parent) = row.path.parent() else {
        return;
    };
    let parent_limit = limit_of(&parent, built);
    for field in Field::ALL {
        let (value, above) = (field.of(&row.built), field.of(&parent_limit));
        if !row.wrote(field) || value >= BaseLimit::UNLIMITED || value <= above {
            continue;
        }
        let larger = if row.path == ScopePath::Transient {
            "the transient scope is larger than the system scope, which"
        } else {
            "every reservation here also counts there, and that limit"
        };
        let message = format!(
            "{} is above {parent}.{field} ({}): {larger} refuses first, so this limit is never reached",
            field.show(value),
            field.show(above),
        );
        warnings.push(warn(row, field, WarningKind::AboveParent, message));
    }
}

/// Inbound connections blocked where every connection passes, or left low while the total
/// was raised.
fn inbound_conns(row: &ScopeLimits, defaults: &ConcreteLimitConfig, warnings: &mut Vec<Warning>) {
    let on_every_path = matches!(
        row.path,
        ScopePath::System | ScopePath::Transient | ScopePath::PeerDefault | ScopePath::Conn
    );
    if !on_every_path {
        return;
    }
    let limit = &row.built;
    if row.wrote(Field::ConnsInbound) && limit.conns_inbound == 0 && limit.conns > 0 {
        let whose = if row.path == ScopePath::PeerDefault {
            "of every peer without an entry of its own"
        } else {
            "the node would accept"
        };
        let message = format!(
            "blockAll refuses every inbound connection {whose}: the node can only dial out"
        );
        warnings.push(warn(
            row,
            Field::ConnsInbound,
            WarningKind::InboundConns,
            message,
        ));
    }
    let raised_total = matches!(row.path, ScopePath::System | ScopePath::Transient)
        && row.wrote(Field::Conns)
        && !row.wrote(Field::ConnsInbound)
        && limit.conns > limit_of(&row.path, defaults).conns
        && limit.conns_inbound < limit.conns;
    if raised_total {
        let message = format!(
            "raised to {} while {}.ConnsInbound stays at its default of {}: inbound connections \
             are still refused past {} (\"cannot reserve inbound connection\", kubo#9432); \
             raise ConnsInbound as well",
            limit.conns, row.path, limit.conns_inbound, limit.conns_inbound
        );
        warnings.push(warn(row, Field::Conns, WarningKind::InboundConns, message));
    }
}

/// Written memory of a scope that holds streams below what one stream may use.
fn memory_below_stream(row: &ScopeLimits, stream_memory: u64, warnings: &mut Vec<Warning>) {
    let memory = row.built.memory;
    if !row.path.holds_streams()
        || row.path == ScopePath::Stream
        || !row.wrote(Field::Memory)
        || memory >= stream_memory
    {
        return;
    }
    let message = if memory == 0 {
        "blockAll refuses every memory reservation: streams in this scope cannot buffer anything"
            .to_owned()
    } else {
        format!(
            "{} is below Stream.Memory ({}), what one stream may use: a single stream in this \
             scope cannot get the memory its own limit allows",
            Field::Memory.show(memory),
            Field::Memory.show(stream_memory)
        )
    };
    warnings.push(warn(
        row,
        Field::Memory,
        WarningKind::MemoryBelowStream,
        message,
    ));
}

/// A written inbound or outbound limit above the scope's total.
fn direction_above_total(row: &ScopeLimits, warnings: &mut Vec<Warning>) {
    for field in Field::ALL {
        let Some(total) = field.total() else { continue };
        let (value, cap) = (field.of(&row.built), total.of(&row.built));
        if row.wrote(field) && value < BaseLimit::UNLIMITED && value > cap {
            let message = format!(
                "{} is above {}.{total} ({}): the total refuses first, so this limit is never reached",
                field.show(value),
                row.path,
                total.show(cap)
            );
            warnings.push(warn(row, field, WarningKind::DirectionAboveTotal, message));
        }
    }
}

/// A written blockAll on something every connection or stream needs, in a scope they all
/// pass. Inbound connections and memory have warnings of their own.
fn blocked(row: &ScopeLimits, warnings: &mut Vec<Warning>) {
    let stream_fields: &[Field] = &[
        Field::Streams,
        Field::StreamsInbound,
        Field::StreamsOutbound,
    ];
    let conn_fields: &[Field] = &[Field::Conns, Field::ConnsOutbound, Field::Fd];
    let (fields, whose): (Vec<Field>, &str) = match row.path {
        ScopePath::System | ScopePath::Transient => {
            ([stream_fields, conn_fields].concat(), "the node would take")
        }
        ScopePath::PeerDefault => (
            [stream_fields, conn_fields].concat(),
            "of every peer without an entry of its own",
        ),
        ScopePath::Conn => (conn_fields.to_vec(), "the node would take"),
        ScopePath::Stream => (stream_fields.to_vec(), "the node would take"),
        _ => return,
    };
    for field in fields {
        if !row.wrote(field) || field.of(&row.built) != 0 {
            continue;
        }
        let what = match field {
            Field::Streams => "stream",
            Field::StreamsInbound => "inbound stream",
            Field::StreamsOutbound => "outbound stream",
            Field::Conns => "connection",
            Field::ConnsOutbound => "outbound connection",
            _ => "connection that needs a file descriptor (TCP, WebSocket)",
        };
        let message = format!("blockAll refuses every {what} {whose}");
        warnings.push(warn(row, field, WarningKind::Blocked, message));
    }
}

/// The limit `path` resolves to in `limits`.
fn limit_of(path: &ScopePath, limits: &ConcreteLimitConfig) -> BaseLimit {
    match path {
        ScopePath::System => limits.system,
        ScopePath::Transient => limits.transient,
        ScopePath::AllowlistedSystem => limits.allowlisted_system,
        ScopePath::AllowlistedTransient => limits.allowlisted_transient,
        ScopePath::ServiceDefault => limits.service_default,
        ScopePath::Service(name) => limits.service_limits(name),
        ScopePath::ServicePeerDefault => limits.service_peer_default,
        ScopePath::ServicePeer(name) => limits.service_peer_limits(name),
        ScopePath::ProtocolDefault => limits.protocol_default,
        ScopePath::Protocol(name) => limits.protocol_limits(name),
        ScopePath::ProtocolPeerDefault => limits.protocol_peer_default,
        ScopePath::ProtocolPeer(name) => limits.protocol_peer_limits(name),
        ScopePath::PeerDefault => limits.peer_default,
        ScopePath::Peer(peer) => limits.peer_limits(peer),
        ScopePath::Conn => limits.conn,
        ScopePath::Stream => limits.stream,
    }
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

/// The paths of the fields in `document` that a limits file does not have.
fn unknown_fields(document: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let Value::Object(top) = document else {
        return unknown;
    };
    for (key, value) in top {
        if let Some(scope) = FIXED_SCOPES.iter().find(|name| names_field(key, name)) {
            unknown_limit_fields(scope, value, &mut unknown);
        } else if let Some(map) = SCOPE_MAPS.iter().find(|name| names_field(key, name)) {
            if let Value::Object(entries) = value {
                for (entry, limits) in entries {
                    unknown_limit_fields(&format!("{map}[{entry:?}]"), limits, &mut unknown);
                }
            }
        } else {
            unknown.push(key.clone());
        }
    }
    unknown
}

/// The paths of the keys of one scope's limits that are not limits.
fn unknown_limit_fields(scope: &str, limits: &Value, unknown: &mut Vec<String>) {
    if let Value::Object(fields) = limits {
        for key in fields.keys() {
            if !Field::ALL.iter().any(|f| names_field(key, f.json_name())) {
                unknown.push(format!("{scope}.{key}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rcmgr::ScalingLimitConfig;

    use super::*;

    /// The warnings for `json` built on go's defaults for 8 GiB and 16384 descriptors, as
    /// (kind, path) pairs.
    fn warnings_for(json: &str) -> Vec<(WarningKind, String)> {
        let written = PartialLimitConfig::from_json_str(json).expect("a limits file");
        let defaults = ScalingLimitConfig::default()
            .with_libp2p_defaults()
            .scale(8 << 30, 16384);
        let document = serde_json::from_str(json).expect("JSON");
        lint(&written, &written.build(&defaults), &defaults, &document)
            .into_iter()
            .map(|w| (w.kind, w.path))
            .collect()
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
    fn memory_below_one_streams_need() {
        assert_eq!(
            warnings_for(r#"{"PeerDefault": {"Memory": "1048576"}}"#),
            one(WarningKind::MemoryBelowStream, "PeerDefault.Memory")
        );
        assert_eq!(
            warnings_for(r#"{"System": {"Memory": 0}}"#),
            one(WarningKind::MemoryBelowStream, "System.Memory")
        );
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
    fn unknown_fields_are_named_with_their_path() {
        let mut found = warnings_for(
            r#"{"Sytem": {}, "system": {"ConnsInbund": 5}, "Protocol": {"/x": {"Foo": 1}}}"#,
        );
        found.sort();
        assert_eq!(
            found,
            vec![
                (
                    WarningKind::UnknownField,
                    r#"Protocol["/x"].Foo"#.to_owned()
                ),
                (WarningKind::UnknownField, "System.ConnsInbund".to_owned()),
                (WarningKind::UnknownField, "Sytem".to_owned()),
            ]
        );
    }
}
