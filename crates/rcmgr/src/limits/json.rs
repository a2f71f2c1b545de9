//! go's JSON limit format, in both directions.
//!
//! Reading follows go's `encoding/json` as go-libp2p uses it: field names match whatever their
//! case, unknown fields are skipped, `"unlimited"`, `"blockAll"` and `"default"` are markers,
//! an explicit `0` blocks, memory may be a decimal string or a bare integer, and peers are keyed
//! by their base58 ID. Where go accepts a file by accident, rcmgr refuses it with an error
//! naming the field, the line and the column (`docs/compatibility.md` lists each case).
//!
//! Writing produces the bytes go's `json.Marshal(&config)` and `json.MarshalIndent(&config, "",
//! "  ")` produce: per-key maps first (`Service`, `ServicePeer`, `Protocol`, `ProtocolPeer`,
//! `Peer`), then the fixed scopes in declaration order, everything at its default left out, map
//! keys sorted, and `<`, `>`, `&`, U+2028 and U+2029 escaped as go escapes them.

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    io::{BufReader, Read},
    path::Path,
    str::FromStr,
};

use libp2p_identity::PeerId;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor},
    ser::SerializeMap,
};

use super::{LimitVal, PartialLimitConfig, ResourceLimits};
use crate::error::{ConfigError, ConfigErrorKind, Error};

/// The fields of a [`ResourceLimits`] in go's JSON, in the order of
/// [`ResourceLimits::as_array`].
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

/// The index of `Memory` in [`LIMIT_FIELDS`]: the one field written as a decimal string.
const MEMORY_FIELD: usize = 7;

/// The per-peer map's name in go's JSON.
const PEER_MAP: &str = "Peer";

/// How many path segments an error message shows before it elides the rest.
const MAX_PATH_SEGMENTS: usize = 12;

impl PartialLimitConfig {
    /// Reads a limits configuration from JSON text in go's format (a go-libp2p or kubo limits
    /// file). The whole document must be one JSON object (or `null`, read as an empty
    /// configuration), with nothing but whitespace after it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the field path, line and column of the first problem. Nothing is
    /// returned in part: build and apply the result only once it has parsed.
    ///
    /// ```
    /// use rcmgr::{LimitVal, PartialLimitConfig};
    /// let partial = PartialLimitConfig::from_json_str(r#"{
    ///     "system": {"ConnsInbound": 512, "Memory": "1073741824", "FD": "unlimited"},
    ///     "Peer": {"QmVvtzcZgCkMnSFf2dnrBPXrWuNFWNM9J3MpZQCvWPuVZf": {"StreamsInbound": 0}},
    ///     "SomethingNew": [1, 2, 3]
    /// }"#)?;
    /// assert_eq!(partial.system.conns_inbound, LimitVal::Value(512));
    /// assert_eq!(partial.system.memory, LimitVal::Value(1 << 30));
    /// assert_eq!(partial.system.fd, LimitVal::Unlimited);
    /// let peer: rcmgr::PeerId = "QmVvtzcZgCkMnSFf2dnrBPXrWuNFWNM9J3MpZQCvWPuVZf".parse()?;
    /// assert_eq!(partial.peer[&peer].streams_inbound, LimitVal::BlockAll); // an explicit 0 blocks
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_json_str(json: &str) -> Result<Self, Error> {
        if json.starts_with('\u{feff}') {
            return Err(encoding_error(EncodingProblem::Bom(Bom::Utf8), 1, 1).into());
        }
        Ok(parse_document(serde_json::Deserializer::from_str(json))?)
    }

    /// Reads a limits configuration from the bytes of a file, as
    /// [`from_json_str`](Self::from_json_str) does once they are known to be UTF-8 text
    /// without a byte order mark (see [`json_text`]).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] as for [`from_json_str`](Self::from_json_str), and a
    /// [`Syntax`](crate::ConfigErrorKind::Syntax) error saying what is wrong, at its line and
    /// column, for a byte order mark, UTF-16 or UTF-32 text, or bytes that are not UTF-8.
    ///
    /// ```
    /// let err = rcmgr::PartialLimitConfig::from_json_slice(b"\xef\xbb\xbf{}").unwrap_err();
    /// assert!(err.to_string().contains("byte order mark"), "{err}");
    /// ```
    pub fn from_json_slice(json: &[u8]) -> Result<Self, Error> {
        PartialLimitConfig::from_json_str(json_text(json)?)
    }

    /// Reads a limits configuration from a reader, as [`from_json_str`](Self::from_json_str)
    /// does. The reader is read to its end (it is buffered here).
    ///
    /// # Errors
    ///
    /// [`Error::Config`], as for [`from_json_str`](Self::from_json_str), or with an
    /// [`Io`](crate::ConfigErrorKind::Io) kind when reading fails.
    ///
    /// ```
    /// let file = br#"{"Transient": {"Conns": 32}}"#;
    /// let partial = rcmgr::PartialLimitConfig::from_json_reader(&file[..])?;
    /// assert_eq!(partial.transient.conns, rcmgr::LimitVal::Value(32));
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn from_json_reader(reader: impl Read) -> Result<Self, Error> {
        let text = Utf8Reader::new(BufReader::new(reader));
        Ok(parse_document(serde_json::Deserializer::from_reader(text))?)
    }

    /// Reads a limits file, as [`from_json_str`](Self::from_json_str) does; errors name the
    /// file. Build the result on the defaults you want (go's `NewLimiterFromJSON`):
    ///
    /// ```no_run
    /// use rcmgr::{PartialLimitConfig, ResourceManager, ScalingLimitConfig};
    /// let defaults = ScalingLimitConfig::default().with_libp2p_defaults().autoscale();
    /// let limits = PartialLimitConfig::from_json_file("limits.json")?.build(&defaults);
    /// let rm = ResourceManager::new(limits);
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`], with the file's path, when the file cannot be opened or read or
    /// holds a bad configuration.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let in_file = |error: ConfigError| Error::from(error.in_file(path.to_path_buf()));
        let file = File::open(path).map_err(|error| in_file(io_error(&error)))?;
        let text = Utf8Reader::new(BufReader::new(file));
        parse_document(serde_json::Deserializer::from_reader(text)).map_err(in_file)
    }

    /// This configuration as compact JSON, byte for byte what go's `json.Marshal(&config)`
    /// writes: defaults left out, per-key maps first, keys in go's order.
    ///
    /// ```
    /// use rcmgr::{LimitVal, PartialLimitConfig};
    /// let mut partial = PartialLimitConfig::default();
    /// partial.system.streams_outbound = LimitVal::Unlimited;
    /// partial.system.memory = LimitVal::Value(1 << 30);
    /// assert_eq!(
    ///     partial.to_json_string(),
    ///     r#"{"System":{"StreamsOutbound":"unlimited","Memory":"1073741824"}}"#
    /// );
    /// ```
    pub fn to_json_string(&self) -> String {
        let mut out = String::new();
        JsonValue::of_config(self).write(&mut out, None, 0);
        out
    }

    /// This configuration as JSON indented by two spaces, byte for byte what go's
    /// `json.MarshalIndent(&config, "", "  ")` writes (no newline at the end).
    ///
    /// ```
    /// use rcmgr::{LimitVal, PartialLimitConfig};
    /// let mut partial = PartialLimitConfig::default();
    /// partial.conn.fd = LimitVal::BlockAll;
    /// assert_eq!(partial.to_json_pretty(), "{\n  \"Conn\": {\n    \"FD\": \"blockAll\"\n  }\n}");
    /// ```
    pub fn to_json_pretty(&self) -> String {
        let mut out = String::new();
        JsonValue::of_config(self).write(&mut out, Some("  "), 0);
        out
    }

    /// Writes [`to_json_pretty`](Self::to_json_pretty) to the file at `path`, replacing it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] with an [`Io`](crate::ConfigErrorKind::Io) kind and the file's path
    /// when the file cannot be written.
    ///
    /// ```no_run
    /// let limits = rcmgr::ScalingLimitConfig::default().autoscale();
    /// limits.to_partial().write_json_file("limits.json")?;
    /// # Ok::<(), rcmgr::Error>(())
    /// ```
    pub fn write_json_file(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json_pretty())
            .map_err(|error| Error::from(io_error(&error).in_file(path.to_path_buf())))
    }
}

/// The little JSON this format needs, written once and emitted either as exact bytes
/// ([`write`](Self::write)) or through serde (its `Serialize`).
enum JsonValue {
    Object(Vec<(String, JsonValue)>),
    Number(u64),
    Text(String),
}

impl JsonValue {
    /// The JSON document go writes for `config`.
    fn of_config(config: &PartialLimitConfig) -> JsonValue {
        let mut entries = Vec::new();
        for (name, map) in config.named_maps() {
            if !map.is_empty() {
                let members = map
                    .iter()
                    .map(|(key, limits)| (key.clone(), JsonValue::of_limits(limits)))
                    .collect();
                entries.push((name.to_owned(), JsonValue::Object(members)));
            }
        }
        if !config.peer.is_empty() {
            // go rewrites the keys as base58 strings before sorting them.
            let mut members: Vec<_> = config
                .peer
                .iter()
                .map(|(peer, limits)| (peer.to_base58(), JsonValue::of_limits(limits)))
                .collect();
            members.sort_by(|(a, _), (b, _)| a.cmp(b));
            entries.push((PEER_MAP.to_owned(), JsonValue::Object(members)));
        }
        for (name, limits) in config.fixed_scopes() {
            if !limits.is_default() {
                entries.push((name.to_owned(), JsonValue::of_limits(limits)));
            }
        }
        JsonValue::Object(entries)
    }

    /// The JSON object go writes for `limits`: defaults left out, memory as a string.
    fn of_limits(limits: &ResourceLimits) -> JsonValue {
        let members = LIMIT_FIELDS
            .iter()
            .zip(limits.as_array())
            .enumerate()
            .filter(|(_, (_, value))| !value.is_default())
            .map(|(index, (name, value))| {
                (
                    (*name).to_owned(),
                    JsonValue::of_value(value, index == MEMORY_FIELD),
                )
            })
            .collect();
        JsonValue::Object(members)
    }

    /// The JSON go writes for `value`; `as_string` for memory, which go writes as a decimal
    /// string.
    fn of_value(value: LimitVal, as_string: bool) -> JsonValue {
        match value.canonical() {
            LimitVal::Default => JsonValue::Text("default".to_owned()),
            LimitVal::Unlimited => JsonValue::Text("unlimited".to_owned()),
            LimitVal::BlockAll => JsonValue::Text("blockAll".to_owned()),
            LimitVal::Value(value) if as_string => JsonValue::Text(value.to_string()),
            LimitVal::Value(value) => JsonValue::Number(value),
        }
    }
}

impl JsonValue {
    /// Appends this value to `out` as go's encoder does; `indent` as go's `MarshalIndent`
    /// indents (an empty object stays `{}`), `None` for compact output.
    fn write(&self, out: &mut String, indent: Option<&str>, depth: usize) {
        match self {
            JsonValue::Number(value) => out.push_str(&value.to_string()),
            JsonValue::Text(text) => push_go_string(out, text),
            JsonValue::Object(members) if members.is_empty() => out.push_str("{}"),
            JsonValue::Object(members) => {
                out.push('{');
                for (position, (key, value)) in members.iter().enumerate() {
                    if position > 0 {
                        out.push(',');
                    }
                    push_newline_and_indent(out, indent, depth + 1);
                    push_go_string(out, key);
                    out.push(':');
                    if indent.is_some() {
                        out.push(' ');
                    }
                    value.write(out, indent, depth + 1);
                }
                push_newline_and_indent(out, indent, depth);
                out.push('}');
            }
        }
    }
}

fn push_newline_and_indent(out: &mut String, indent: Option<&str>, depth: usize) {
    if let Some(indent) = indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    }
}

/// Appends `text` as a JSON string the way go's encoder escapes it (HTML characters and the
/// JavaScript line separators included).
fn push_go_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                let code = u32::from(c);
                out.push_str("\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(char::from(HEX[((code >> shift) & 0xF) as usize]));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Serialize for JsonValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            JsonValue::Number(value) => serializer.serialize_u64(*value),
            JsonValue::Text(text) => serializer.serialize_str(text),
            JsonValue::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

/// The document [`PartialLimitConfig::to_json_string`] writes, through any serde serializer.
impl Serialize for PartialLimitConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        JsonValue::of_config(self).serialize(serializer)
    }
}

/// The object go writes for these limits (defaults left out, `Memory` as a string).
impl Serialize for ResourceLimits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        JsonValue::of_limits(self).serialize(serializer)
    }
}

/// `"default"`, `"unlimited"`, `"blockAll"` or the number, as go writes a lone `LimitVal`.
impl Serialize for LimitVal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        JsonValue::of_value(*self, false).serialize(serializer)
    }
}

/// Reads go's format with go's leniency (any case for field names, unknown fields skipped) and
/// rcmgr's strictness about values; see [`PartialLimitConfig::from_json_str`].
impl<'de> Deserialize<'de> for PartialLimitConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ConfigVisitor)
    }
}

/// One scope's limits, as they appear in a limits file.
impl<'de> Deserialize<'de> for ResourceLimits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut limits = ResourceLimits::default();
        LimitsInPlace(&mut limits).deserialize(deserializer)?;
        Ok(limits)
    }
}

/// A count limit as go reads a lone `LimitVal`: a non-negative integer (an explicit 0 blocks),
/// `-1` or `-2`, `"unlimited"`, `"blockAll"` or `"default"`.
impl<'de> Deserialize<'de> for LimitVal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LimitValVisitor { memory: false })
    }
}

/// Whether a key in a limits file names the field or scope `name`, as go (and this crate's
/// reader) match them: ASCII letters in any case, and the two non-ASCII letters Unicode folds
/// onto ASCII ones (`ſ` onto `s`, the Kelvin sign onto `k`). For tools that inspect a file's
/// keys themselves, such as a checker listing the keys the reader ignores.
///
/// ```
/// use rcmgr::limits::names_field;
/// assert!(names_field("streamsInbound", "StreamsInbound"));
/// assert!(names_field("ſystem", "System"));
/// assert!(!names_field("Systems", "System"));
/// ```
pub fn names_field(key: &str, name: &str) -> bool {
    let fold = |c: char| match c {
        'ſ' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    key.chars()
        .map(fold)
        .eq(name.chars().map(|c| c.to_ascii_lowercase()))
}

struct ConfigVisitor;

impl<'de> Visitor<'de> for ConfigVisitor {
    type Value = PartialLimitConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a limits configuration object")
    }

    /// go leaves the configuration empty on `null`.
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(PartialLimitConfig::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut config = PartialLimitConfig::default();
        while let Some(key) = map.next_key::<String>()? {
            if let Some((_, limits)) = config
                .fixed_scopes_mut()
                .into_iter()
                .find(|(name, _)| names_field(&key, name))
            {
                map.next_value_seed(LimitsInPlace(limits))?;
            } else if let Some((_, entries)) = config
                .named_maps_mut()
                .into_iter()
                .find(|(name, _)| names_field(&key, name))
            {
                map.next_value_seed(EntriesInPlace {
                    entries,
                    parse_key: |name| Ok(name),
                })?;
            } else if names_field(&key, PEER_MAP) {
                map.next_value_seed(EntriesInPlace {
                    entries: &mut config.peer,
                    parse_key: parse_peer_key,
                })?;
            } else {
                map.next_value_seed(SkipValue)?;
            }
        }
        Ok(config)
    }
}

fn parse_peer_key(key: String) -> Result<PeerId, String> {
    PeerId::from_str(&key).map_err(|error| format!("invalid peer ID {key:?}: {error}"))
}

/// Reads one scope's limits into an existing value, as go decodes into a struct: fields in
/// the document replace those of the value, the others stay, and `null` changes nothing.
struct LimitsInPlace<'a>(&'a mut ResourceLimits);

impl<'de> DeserializeSeed<'de> for LimitsInPlace<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LimitsInPlace<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of limits (Streams, StreamsInbound, …, FD, Memory)")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut values = self.0.as_array();
        while let Some(key) = map.next_key::<String>()? {
            match LIMIT_FIELDS.iter().position(|name| names_field(&key, name)) {
                Some(index) => {
                    values[index] = map.next_value_seed(LimitValVisitor {
                        memory: index == MEMORY_FIELD,
                    })?;
                }
                None => map.next_value_seed(SkipValue)?,
            }
        }
        *self.0 = ResourceLimits::from_array(values);
        Ok(())
    }
}

/// Reads a per-key map into an existing one, as go decodes into a map: each entry replaces any
/// entry with its key, and `null` empties the map.
struct EntriesInPlace<'a, K> {
    entries: &'a mut BTreeMap<K, ResourceLimits>,
    parse_key: fn(String) -> Result<K, String>,
}

impl<'de, K: Ord> DeserializeSeed<'de> for EntriesInPlace<'_, K> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, K: Ord> Visitor<'de> for EntriesInPlace<'_, K> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object mapping names to limits")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.entries.clear();
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<String>()? {
            let key = (self.parse_key)(name).map_err(de::Error::custom)?;
            let mut limits = ResourceLimits::default();
            map.next_value_seed(LimitsInPlace(&mut limits))?;
            self.entries.insert(key, limits);
        }
        Ok(())
    }
}

/// Reads one limit value; `memory` also takes a decimal string.
#[derive(Clone, Copy)]
struct LimitValVisitor {
    memory: bool,
}

impl LimitValVisitor {
    /// An integer from the file: 0 blocks (go's rule for explicit zeros), -1 and -2 are go's
    /// markers for unlimited and blockAll, other negatives and anything above `i64::MAX` are
    /// refused.
    fn integer<E: de::Error>(value: i128) -> Result<LimitVal, E> {
        match value {
            0 | -2 => Ok(LimitVal::BlockAll),
            -1 => Ok(LimitVal::Unlimited),
            value if value < 0 => Err(E::custom(format_args!(
                "negative limit {value}: a limit is at least 0; write \"unlimited\" or \"blockAll\" for the markers"
            ))),
            value => u64::try_from(value)
                .ok()
                .filter(|value| i64::try_from(*value).is_ok())
                .map(LimitVal::Value)
                .ok_or_else(|| {
                    E::custom(format_args!(
                        "limit {value} is out of range: the largest is {}",
                        i64::MAX
                    ))
                }),
        }
    }
}

impl<'de> DeserializeSeed<'de> for LimitValVisitor {
    type Value = LimitVal;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<LimitVal, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LimitValVisitor {
    type Value = LimitVal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.memory {
            f.write_str(
                "a memory limit: a byte count as a decimal string or an integer, \"unlimited\", \"blockAll\" or \"default\"",
            )
        } else {
            f.write_str(
                "a limit: a non-negative integer, \"unlimited\", \"blockAll\" or \"default\"",
            )
        }
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<LimitVal, E> {
        Self::integer(i128::from(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<LimitVal, E> {
        Self::integer(i128::from(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<LimitVal, E> {
        // serde_json reads integers beyond 64 bits as floats.
        if value.fract() == 0.0 && value.abs() >= 9_223_372_036_854_775_808.0 {
            Err(E::custom(format_args!(
                "limit {value} is out of range: the largest is {}",
                i64::MAX
            )))
        } else {
            Err(E::invalid_type(de::Unexpected::Float(value), &self))
        }
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<LimitVal, E> {
        match text {
            "default" => Ok(LimitVal::Default),
            "unlimited" => Ok(LimitVal::Unlimited),
            "blockAll" => Ok(LimitVal::BlockAll),
            text => match text.parse::<i128>() {
                Ok(value) if self.memory => Self::integer(value),
                Ok(_) => Err(E::custom(format_args!(
                    "quoted number {text:?}: only Memory may be written as a string; write {text} without quotes"
                ))),
                Err(_) if self.memory && is_signed_decimal(text) => Err(E::custom(format_args!(
                    "limit {text} is out of range: the largest is {}",
                    i64::MAX
                ))),
                Err(_) => Err(E::custom(format_args!(
                    "unknown limit {text:?}, expected {}",
                    Expecting(self)
                ))),
            },
        }
    }
}

/// Whether `text` is an optionally signed run of decimal digits (go's `ParseInt` syntax).
fn is_signed_decimal(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A visitor's `expecting` text as a `Display`.
struct Expecting<V>(V);

impl<'de, V: Visitor<'de>> fmt::Display for Expecting<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
}

/// Skips a value of an unknown field, nested values included. Unlike serde's `IgnoredAny` it
/// goes through `deserialize_any`, so serde_json's nesting limit (128 levels) applies and a
/// hostile file cannot nest without bound.
struct SkipValue;

impl<'de> DeserializeSeed<'de> for SkipValue {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SkipValue {
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

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(SkipValue)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(SkipValue)?.is_some() {
            map.next_value_seed(SkipValue)?;
        }
        Ok(())
    }
}

/// Reads one whole document: the configuration, then nothing but whitespace.
fn parse_document<'de, R: serde_json::de::Read<'de>>(
    mut deserializer: serde_json::Deserializer<R>,
) -> Result<PartialLimitConfig, ConfigError> {
    let config = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = render_path(error.path());
        let (line, column) = (error.inner().line(), error.inner().column());
        match encoding_of(error.into_inner()) {
            Ok(encoding) => encoding,
            Err(inner) => json_error(&inner, None).at(path, line, column),
        }
    })?;
    deserializer.end().map_err(|error| {
        let (line, column) = (error.line(), error.column());
        match encoding_of(error) {
            Ok(encoding) => encoding,
            Err(error) => json_error(&error, Some(ConfigErrorKind::TrailingCharacters)).at(
                String::new(),
                line,
                column,
            ),
        }
    })?;
    Ok(config)
}

/// The text of a limits file's bytes: UTF-8 without a byte order mark, as JSON is (RFC 8259,
/// section 8.1) and as go-libp2p and kubo read it. For tools that read a file's bytes
/// themselves and want its text, or rcmgr's message for why there is none.
///
/// # Errors
///
/// A [`Syntax`](crate::ConfigErrorKind::Syntax) [`Error::Config`] that says what the bytes
/// are instead, at the line and column (in characters, from 1) where it shows: a UTF-8 byte
/// order mark, UTF-16 or UTF-32 text (by their byte order marks, or the NUL bytes of their
/// ASCII characters), or the first byte that is not UTF-8.
///
/// ```
/// use rcmgr::limits::json_text;
/// assert_eq!(json_text(b"{\"System\": {}}")?, "{\"System\": {}}");
/// let err = json_text(b"{\n  \"Service\": {\"caf\xe9\": {}}}").unwrap_err();
/// let config = err.config().unwrap();
/// assert_eq!((config.line(), config.column()), (2, 19));
/// assert!(config.message().starts_with("byte 0xE9 is not UTF-8"), "{err}");
/// # Ok::<(), rcmgr::Error>(())
/// ```
pub fn json_text(bytes: &[u8]) -> Result<&str, Error> {
    if let Some(bom) = Bom::at_start(bytes) {
        return Err(encoding_error(EncodingProblem::Bom(bom), 1, 1).into());
    }
    let mut position = Position::default();
    match std::str::from_utf8(bytes) {
        Ok(text) => match text.find('\0') {
            Some(nul) => {
                position.advance(&bytes[..nul]);
                Err(position.problem(EncodingProblem::Nul).into())
            }
            None => Ok(text),
        },
        Err(error) => {
            let valid = error.valid_up_to();
            position.advance(&bytes[..valid]);
            if let Some(nul) = bytes[..valid].iter().position(|b| *b == 0) {
                let mut at_nul = Position::default();
                at_nul.advance(&bytes[..nul]);
                return Err(at_nul.problem(EncodingProblem::Nul).into());
            }
            let problem = match error.error_len() {
                Some(_) => EncodingProblem::NotUtf8(bytes[valid]),
                None => EncodingProblem::Truncated,
            };
            Err(position.problem(problem).into())
        }
    }
}

/// A byte order mark a file may start with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bom {
    Utf8,
    Utf16Le,
    Utf16Be,
    Utf32Le,
    Utf32Be,
}

impl Bom {
    /// The byte order mark `bytes` start with, if any (UTF-32 LE before UTF-16 LE, whose mark
    /// it begins with).
    fn at_start(bytes: &[u8]) -> Option<Bom> {
        const MARKS: [(&[u8], Bom); 5] = [
            (&[0xEF, 0xBB, 0xBF], Bom::Utf8),
            (&[0xFF, 0xFE, 0, 0], Bom::Utf32Le),
            (&[0, 0, 0xFE, 0xFF], Bom::Utf32Be),
            (&[0xFF, 0xFE], Bom::Utf16Le),
            (&[0xFE, 0xFF], Bom::Utf16Be),
        ];
        MARKS
            .iter()
            .find(|(mark, _)| bytes.starts_with(mark))
            .map(|(_, bom)| *bom)
    }
}

/// What is wrong with the encoding of a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EncodingProblem {
    Bom(Bom),
    /// A NUL byte: never in JSON text, and what UTF-16 and UTF-32 put beside ASCII.
    Nul,
    /// This byte does not start or continue a UTF-8 character.
    NotUtf8(u8),
    /// The document ends inside a UTF-8 character.
    Truncated,
}

impl fmt::Display for EncodingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SAVE: &str = "a limits file is UTF-8 text without a byte order mark";
        match self {
            EncodingProblem::Bom(Bom::Utf8) => write!(
                f,
                "starts with a UTF-8 byte order mark (bytes EF BB BF), which JSON does not \
                 allow and go-libp2p and kubo refuse too: save it as UTF-8 without a BOM"
            ),
            EncodingProblem::Bom(bom) => {
                let (name, bytes) = match bom {
                    Bom::Utf16Le => ("UTF-16", "FF FE"),
                    Bom::Utf16Be => ("UTF-16", "FE FF"),
                    Bom::Utf32Le => ("UTF-32", "FF FE 00 00"),
                    _ => ("UTF-32", "00 00 FE FF"),
                };
                write!(
                    f,
                    "is {name} text (it starts with the byte order mark {bytes}): {SAVE}; save \
                     it as UTF-8"
                )
            }
            EncodingProblem::Nul => write!(
                f,
                "holds a NUL byte, which JSON text never does (UTF-16 or UTF-32 text has one \
                 beside every ASCII character): {SAVE}"
            ),
            EncodingProblem::NotUtf8(byte) => write!(
                f,
                "byte 0x{byte:02X} is not UTF-8: {SAVE} (a file saved as Latin-1 or \
                 Windows-1252 has such bytes: save it as UTF-8)"
            ),
            EncodingProblem::Truncated => {
                write!(f, "ends in the middle of a UTF-8 character: {SAVE}")
            }
        }
    }
}

impl std::error::Error for EncodingProblem {}

/// An encoding problem at `line` and `column` as a [`ConfigError`].
fn encoding_error(problem: EncodingProblem, line: usize, column: usize) -> ConfigError {
    ConfigError::new(ConfigErrorKind::Syntax, problem.to_string()).at(String::new(), line, column)
}

/// The encoding problem a reader failed with, or the error as it was.
fn encoding_of(error: serde_json::Error) -> Result<ConfigError, serde_json::Error> {
    if error.classify() != serde_json::error::Category::Io {
        return Err(error);
    }
    let io = std::io::Error::from(error);
    match io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Located>())
    {
        Some(located) => Ok(encoding_error(
            located.problem,
            located.position.line,
            located.position.column,
        )),
        None => Err(serde_json::Error::io(io)),
    }
}

/// Where in a document a byte is: line and column (in characters) from 1.
#[derive(Clone, Copy, Debug)]
struct Position {
    line: usize,
    column: usize,
}

impl Default for Position {
    fn default() -> Self {
        Position { line: 1, column: 1 }
    }
}

impl Position {
    /// Moves past `bytes`, valid UTF-8 (a character counts once, at its first byte).
    fn advance(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.step(byte);
        }
    }

    fn step(&mut self, byte: u8) {
        if byte == b'\n' {
            self.line += 1;
            self.column = 1;
        } else if byte & 0xC0 != 0x80 {
            self.column += 1;
        }
    }

    fn problem(self, problem: EncodingProblem) -> ConfigError {
        encoding_error(problem, self.line, self.column)
    }
}

/// An encoding problem with where it is, as the error a [`Utf8Reader`] fails with.
#[derive(Debug)]
struct Located {
    problem: EncodingProblem,
    position: Position,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} column {}: {}",
            self.position.line, self.position.column, self.problem
        )
    }
}

impl std::error::Error for Located {}

/// Passes a reader's bytes on while checking, as they go, that they are UTF-8 text without a
/// byte order mark (as [`json_text`] does for bytes in hand), so that a file is never held
/// whole: the first bad byte fails the read with a [`Located`] problem. A character's first
/// byte is passed on only once the rest of it has been read and checked, so a parser never
/// sees the start of a bad character (it would report something else).
struct Utf8Reader<R> {
    inner: R,
    position: Position,
    /// Bytes read ahead and checked but not passed on yet (the first bytes, read to look for a
    /// byte order mark, and the rest of a character begun at the end of a read).
    carry: [u8; 8],
    carry_len: usize,
    carry_passed: usize,
    started: bool,
    /// Continuation bytes still expected of the current character.
    pending: u8,
    /// The smallest and largest byte the next continuation byte may be (UTF-8's rules for the
    /// second byte of E0, ED, F0 and F4 sequences; 80..=BF otherwise).
    next_range: (u8, u8),
    /// The first byte of the current character and where it is: a bad character is reported
    /// there, as [`json_text`] reports it.
    lead: (u8, Position),
}

impl<R: Read> Utf8Reader<R> {
    fn new(inner: R) -> Self {
        Utf8Reader {
            inner,
            position: Position::default(),
            carry: [0; 8],
            carry_len: 0,
            carry_passed: 0,
            started: false,
            pending: 0,
            next_range: (0x80, 0xBF),
            lead: (0, Position::default()),
        }
    }

    fn fail(&self, problem: EncodingProblem) -> std::io::Error {
        // A bad or cut-short character is reported at its first byte.
        let (problem, position) = match problem {
            EncodingProblem::NotUtf8(_) if self.pending > 0 => {
                (EncodingProblem::NotUtf8(self.lead.0), self.lead.1)
            }
            EncodingProblem::Truncated => (problem, self.lead.1),
            _ => (problem, self.position),
        };
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            Located { problem, position },
        )
    }

    /// One byte from the inner reader, or `None` at its end.
    fn next_byte(&mut self) -> std::io::Result<Option<u8>> {
        let mut byte = [0u8];
        loop {
            match self.inner.read(&mut byte) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(byte[0])),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Checks `byte` and keeps it to pass on.
    fn carry_byte(&mut self, byte: u8) -> std::io::Result<()> {
        self.check(byte).map_err(|problem| self.fail(problem))?;
        self.carry[self.carry_len] = byte;
        self.carry_len += 1;
        Ok(())
    }

    /// Reads and checks the rest of the current character into the carry.
    fn complete_character(&mut self) -> std::io::Result<()> {
        while self.pending > 0 {
            match self.next_byte()? {
                Some(byte) => self.carry_byte(byte)?,
                None => return Err(self.fail(EncodingProblem::Truncated)),
            }
        }
        Ok(())
    }

    /// Reads the first bytes (up to a mark's length), refuses a byte order mark, and checks
    /// them.
    fn start(&mut self) -> std::io::Result<()> {
        self.started = true;
        let mut head = [0u8; 4];
        let mut filled = 0;
        while filled < head.len() {
            match self.next_byte()? {
                Some(byte) => {
                    head[filled] = byte;
                    filled += 1;
                }
                None => break,
            }
        }
        if let Some(bom) = Bom::at_start(&head[..filled]) {
            return Err(self.fail(EncodingProblem::Bom(bom)));
        }
        for &byte in &head[..filled] {
            self.carry_byte(byte)?;
        }
        self.complete_character()
    }

    /// Checks one byte; `Err` with the problem it is.
    fn check(&mut self, byte: u8) -> Result<(), EncodingProblem> {
        if self.pending > 0 {
            let (low, high) = self.next_range;
            if !(low..=high).contains(&byte) {
                return Err(EncodingProblem::NotUtf8(byte));
            }
            self.pending -= 1;
            self.next_range = (0x80, 0xBF);
            return Ok(());
        }
        let (pending, range) = match byte {
            0 => return Err(EncodingProblem::Nul),
            0x01..=0x7F => (0, (0x80, 0xBF)),
            0xC2..=0xDF => (1, (0x80, 0xBF)),
            0xE0 => (2, (0xA0, 0xBF)),
            0xE1..=0xEC | 0xEE..=0xEF => (2, (0x80, 0xBF)),
            0xED => (2, (0x80, 0x9F)),
            0xF0 => (3, (0x90, 0xBF)),
            0xF1..=0xF3 => (3, (0x80, 0xBF)),
            0xF4 => (3, (0x80, 0x8F)),
            _ => return Err(EncodingProblem::NotUtf8(byte)),
        };
        self.lead = (byte, self.position);
        self.position.step(byte);
        self.pending = pending;
        self.next_range = range;
        Ok(())
    }
}

impl<R: Read> Read for Utf8Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.started {
            self.start()?;
        }
        if self.carry_passed < self.carry_len {
            let rest = &self.carry[self.carry_passed..self.carry_len];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.carry_passed += n;
            if self.carry_passed == self.carry_len {
                (self.carry_len, self.carry_passed) = (0, 0);
            }
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        for &byte in &buf[..n] {
            if let Err(problem) = self.check(byte) {
                return Err(self.fail(problem));
            }
        }
        // A character begun in `buf` is checked whole before `buf` is passed on.
        self.complete_character()?;
        Ok(n)
    }
}

/// A serde_json error as a [`ConfigError`] (without its location, which the caller adds).
fn json_error(error: &serde_json::Error, kind: Option<ConfigErrorKind>) -> ConfigError {
    use serde_json::error::Category;
    let kind = kind.unwrap_or(match error.classify() {
        Category::Io => {
            ConfigErrorKind::Io(error.io_error_kind().unwrap_or(std::io::ErrorKind::Other))
        }
        Category::Syntax => ConfigErrorKind::Syntax,
        Category::Data => ConfigErrorKind::InvalidValue,
        Category::Eof => ConfigErrorKind::UnexpectedEof,
    });
    // serde_json appends the position to its message; ConfigError keeps it apart.
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let message = match message.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => message,
    };
    ConfigError::new(kind, message)
}

fn io_error(error: &std::io::Error) -> ConfigError {
    ConfigError::new(ConfigErrorKind::Io(error.kind()), error.to_string())
}

/// A field path as error messages show it: `System.Memory`, with keys that are not plain
/// words quoted in brackets (`Protocol["/ipfs/id/1.0.0"].FD`).
fn render_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for (position, segment) in path.iter().enumerate() {
        if position == MAX_PATH_SEGMENTS {
            out.push('…');
            break;
        }
        match segment {
            Segment::Map { key } | Segment::Enum { variant: key } => {
                let plain =
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if plain {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                } else {
                    out.push('[');
                    push_go_string(&mut out, key);
                    out.push(']');
                }
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Unknown => out.push_str(if out.is_empty() { "?" } else { ".?" }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_fold_like_go() {
        assert!(names_field("system", "System"));
        assert!(names_field("SYSTEM", "System"));
        assert!(names_field("ſystem", "System"));
        assert!(names_field("fd", "FD"));
        assert!(!names_field("Systems", "System"));
        assert!(!names_field("Sy stem", "System"));
    }

    #[test]
    fn strings_are_escaped_like_go() {
        let mut out = String::new();
        push_go_string(&mut out, "a<b>&\"\\\n\u{8}\u{c}\u{1}\u{7f}\u{2028}é/");
        let expected = concat!(
            r#""a\u003cb\u003e\u0026\"\\\n\b\f\u0001"#,
            "\u{7f}",
            r#"\u2028é/""#
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn serde_serialization_matches_the_exact_writer() -> Result<(), serde_json::Error> {
        let mut partial = PartialLimitConfig::default();
        partial.protocol.insert(
            "/p".into(),
            ResourceLimits {
                memory: LimitVal::Value(9),
                ..ResourceLimits::default()
            },
        );
        partial.stream.streams = LimitVal::Unlimited;
        assert_eq!(serde_json::to_string(&partial)?, partial.to_json_string());
        assert_eq!(serde_json::to_string(&LimitVal::Default)?, r#""default""#);
        Ok(())
    }

    #[test]
    fn paths_quote_keys_that_are_not_words() {
        let error = PartialLimitConfig::from_json_str(r#"{"Protocol": {"/a.b": {"FD": true}}}"#)
            .err()
            .and_then(|error| error.config().map(|config| config.path().to_owned()));
        assert_eq!(error.as_deref(), Some(r#"Protocol["/a.b"].FD"#));
    }
}
