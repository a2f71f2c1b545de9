//! `rcmgr limits`: the concrete limits a node gets, as a table or as go's JSON.

use std::io::Write;

use rcmgr::{BaseLimit, ConcreteLimitConfig, ConnLimitPerSubnet, IpLimits, RateLimit};

use crate::{
    cli::{Format, LimitsArgs},
    error::{CliError, Status},
    scopes::{Field, ScopeLimits, scopes},
    sizing::{LimitsSource, Sizing},
    table::Table,
    units::ByteSize,
};

/// Runs `rcmgr limits`: prints the limits for the sizes and file of `args` to `out`.
///
/// # Errors
///
/// [`CliError::Limits`] when the limits file cannot be read, [`CliError::Output`] when `out`
/// cannot be written.
pub fn run(args: &LimitsArgs, out: &mut dyn Write) -> Result<Status, CliError> {
    let sizing = Sizing::resolve(args.sizing.memory, args.sizing.fds);
    let source = LimitsSource::load(sizing, args.config.as_deref()).map_err(CliError::Limits)?;
    let limits = source.build();
    match args.format {
        Format::Json => writeln!(out, "{}", limits.to_partial().to_json_pretty())?,
        Format::Table => write_table(&source, &limits, out)?,
    }
    Ok(Status::Ok)
}

/// The limits as a table, with where they come from and the address-based limits.
fn write_table(
    source: &LimitsSource,
    limits: &ConcreteLimitConfig,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    writeln!(out, "Limits from {}.", source.describe())?;
    if source.file.is_some() {
        writeln!(out, "Scopes marked * are set by the file.")?;
    }
    writeln!(
        out,
        "0 means nothing is allowed (blockAll); unlimited means never checked.\n"
    )?;
    write!(out, "{}", limits_table(&scopes(limits, &source.written())))?;
    writeln!(
        out,
        "\nAddress limits (options in code, not part of limit files):"
    )?;
    for line in address_limits(&limits.ip) {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

/// Every scope's limits, one row each: streams and connections as in/out/total, then file
/// descriptors and memory.
pub fn limits_table(rows: &[ScopeLimits]) -> Table {
    let mut table = Table::new([
        "scope",
        "streams in",
        "streams out",
        "streams",
        "conns in",
        "conns out",
        "conns",
        "fd",
        "memory",
    ]);
    let columns = [
        Field::StreamsInbound,
        Field::StreamsOutbound,
        Field::Streams,
        Field::ConnsInbound,
        Field::ConnsOutbound,
        Field::Conns,
        Field::Fd,
        Field::Memory,
    ];
    for row in rows {
        let marker = if row.is_written() { " *" } else { "" };
        let mut cells = vec![format!("{}{marker}", row.path)];
        cells.extend(
            columns
                .iter()
                .map(|field| cell(*field, field.of(&row.built))),
        );
        table.row(cells);
    }
    table
}

/// One table cell: `unlimited`, memory in binary units, else the number.
fn cell(field: Field, value: u64) -> String {
    match value {
        v if v >= BaseLimit::UNLIMITED => "unlimited".to_owned(),
        v if field == Field::Memory && v > 0 => ByteSize::new(v).to_string(),
        v => v.to_string(),
    }
}

/// The address-based limits in a few lines: connections at once per subnet and network, and
/// new connections per second.
fn address_limits(ip: &IpLimits) -> Vec<String> {
    let subnets = |family: &str, limits: &[ConnLimitPerSubnet]| {
        let each: Vec<String> = limits
            .iter()
            .map(|l| format!("/{}: {}", l.prefix_length, count(l.conn_count)))
            .collect();
        (!each.is_empty()).then(|| format!("{family} {}", each.join(", ")))
    };
    let networks: Vec<String> = ip
        .network_prefix_v4
        .iter()
        .chain(&ip.network_prefix_v6)
        .map(|l| format!("{} {}", l.network, count(l.conn_count)))
        .collect();
    let mut at_once: Vec<String> = [
        subnets("IPv4", &ip.subnet_v4),
        subnets("IPv6", &ip.subnet_v6),
    ]
    .into_iter()
    .flatten()
    .collect();
    at_once.extend(networks);

    let rate = &ip.rate;
    let rate_subnets = |family: &str, limits: &[rcmgr::SubnetRateLimit]| {
        let each: Vec<String> = limits
            .iter()
            .map(|l| format!("/{}: {}", l.prefix_length, per_second(l.limit)))
            .collect();
        (!each.is_empty()).then(|| format!("{family} {}", each.join(", ")))
    };
    let mut new: Vec<String> = rate
        .network_prefixes
        .iter()
        .map(|l| format!("{} {}", l.prefix, per_second(l.limit)))
        .collect();
    new.extend(
        [
            rate_subnets("IPv4", &rate.subnet_v4),
            rate_subnets("IPv6", &rate.subnet_v6),
        ]
        .into_iter()
        .flatten(),
    );
    new.push(format!("all together {}", per_second(rate.global)));

    let none = || vec!["none".to_owned()];
    let or_none = |items: Vec<String>| if items.is_empty() { none() } else { items };
    vec![
        format!("connections at once:  {}", or_none(at_once).join("; ")),
        format!("new connections:      {}", or_none(new).join("; ")),
    ]
}

fn count(limit: u64) -> String {
    if limit >= BaseLimit::UNLIMITED {
        "unlimited".to_owned()
    } else {
        limit.to_string()
    }
}

fn per_second(limit: RateLimit) -> String {
    if limit.is_unlimited() {
        "unlimited".to_owned()
    } else {
        format!("{}/s (burst {})", limit.rps, limit.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_default_address_limits_read_plainly() {
        let lines = address_limits(&IpLimits::default());
        assert_eq!(
            lines[0],
            "connections at once:  IPv4 /32: 8; IPv6 /56: 8, /48: 64; 127.0.0.0/8 unlimited; ::1/128 unlimited"
        );
        assert!(
            lines[1].contains("IPv4 /32: 0.2/s (burst 16)"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with("all together unlimited"), "{}", lines[1]);
        let off = address_limits(&IpLimits::disabled());
        assert_eq!(off[0], "connections at once:  none");
    }

    #[test]
    fn cells_spell_out_the_special_values() {
        assert_eq!(cell(Field::Conns, BaseLimit::UNLIMITED), "unlimited");
        assert_eq!(cell(Field::Memory, 0), "0");
        assert_eq!(cell(Field::Memory, 3 << 29), "1.5 GiB");
        assert_eq!(cell(Field::Fd, 4096), "4096");
    }
}
