//! Learning a substream's protocol from its multistream-select negotiation.
//!
//! multistream-select (the `/multistream/1.0.0` protocol every libp2p substream starts with)
//! sends messages framed by an unsigned-varint length of at most two bytes. The listener
//! answers the dialer's header with the same header, then answers each proposal either with
//! `na\n` or by echoing the proposal, `<protocol>\n`: that echo is the confirmation, and
//! everything after it belongs to the protocol. (The listener may also answer `ls\n` with a
//! list, whose body holds several newlines.)
//!
//! The listener-to-dialer direction therefore names the protocol, whichever side we are on:
//! an inbound substream *writes* it (we are the listener) and an outbound substream *reads*
//! it (we are the dialer). [`ListenerReplies`] follows that direction byte by byte, however the
//! bytes are split into reads or writes, and reports the confirmation when its last byte has
//! been seen. A message is taken for a confirmation by the rule multistream-select itself
//! decodes with: it starts with `/`, ends with `\n` and holds no other newline.
//!
//! Parsing stops at the confirmation, or as soon as the bytes cannot be multistream-select
//! (the first message is not the header, a length is longer than two bytes or zero, a name is
//! not UTF-8), so a stream pays for it only while it negotiates.

/// Bytes in the length prefix of a multistream-select message, at most.
const MAX_LENGTH_BYTES: u8 = 2;

/// The header both sides send first.
const HEADER: &[u8] = b"/multistream/1.0.0\n";

/// What the listener's side of a negotiation has shown so far, once it has shown enough.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The listener confirmed this protocol.
    Confirmed(String),
    /// The bytes are not a multistream-select negotiation; nothing more can be learned.
    NotMultistream,
}

/// Where the parser is within the current message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Position {
    /// Reading the length prefix: the value so far and how many bytes it took.
    Length { value: usize, bytes: u8 },
    /// Reading a message body of `remaining` more bytes into `body`.
    Body { remaining: usize },
}

/// A parser of the listener-to-dialer direction of a multistream-select negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListenerReplies {
    position: Position,
    /// The current message's body so far.
    body: Vec<u8>,
    /// Whether the header has been seen (it must come first).
    seen_header: bool,
}

impl Default for ListenerReplies {
    fn default() -> Self {
        ListenerReplies {
            position: Position::Length { value: 0, bytes: 0 },
            body: Vec::new(),
            seen_header: false,
        }
    }
}

impl ListenerReplies {
    /// Follows `bytes`, the next bytes of the listener-to-dialer direction. Returns the
    /// outcome as soon as one is known; the parser must not be fed after that.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<Outcome> {
        while let Some((&first, rest)) = bytes.split_first() {
            match &mut self.position {
                Position::Length {
                    value,
                    bytes: taken,
                } => {
                    *value |= usize::from(first & 0x7f) << (7 * *taken);
                    *taken += 1;
                    bytes = rest;
                    if first & 0x80 != 0 {
                        if *taken == MAX_LENGTH_BYTES {
                            return Some(Outcome::NotMultistream);
                        }
                        continue;
                    }
                    if *value == 0 {
                        return Some(Outcome::NotMultistream);
                    }
                    self.position = Position::Body { remaining: *value };
                    self.body.clear();
                }
                Position::Body { remaining } => {
                    let take = (*remaining).min(bytes.len());
                    self.body.extend_from_slice(&bytes[..take]);
                    *remaining -= take;
                    bytes = &bytes[take..];
                    if *remaining == 0 {
                        self.position = Position::Length { value: 0, bytes: 0 };
                        if let Some(outcome) = self.message_complete() {
                            return Some(outcome);
                        }
                    }
                }
            }
        }
        None
    }

    /// Classifies the message now in `body`.
    fn message_complete(&mut self) -> Option<Outcome> {
        let body = std::mem::take(&mut self.body);
        if !self.seen_header {
            if body == HEADER {
                self.seen_header = true;
                return None;
            }
            return Some(Outcome::NotMultistream);
        }
        match body.split_last() {
            Some((b'\n', name)) if name.first() == Some(&b'/') && !name.contains(&b'\n') => {
                Some(match String::from_utf8(name.to_vec()) {
                    Ok(protocol) => Outcome::Confirmed(protocol),
                    Err(_) => Outcome::NotMultistream,
                })
            }
            // `na`, an `ls` answer, or a repeated header: keep listening.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One framed message: its length as an unsigned varint, then the body.
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut framed = Vec::new();
        let mut length = body.len();
        loop {
            let byte = (length & 0x7f) as u8;
            length >>= 7;
            if length == 0 {
                framed.push(byte);
                break;
            }
            framed.push(byte | 0x80);
        }
        framed.extend_from_slice(body);
        framed
    }

    fn listener_bytes(messages: &[&[u8]]) -> Vec<u8> {
        messages.iter().flat_map(|message| frame(message)).collect()
    }

    fn feed_in_chunks(bytes: &[u8], chunk: usize) -> Option<Outcome> {
        let mut parser = ListenerReplies::default();
        for piece in bytes.chunks(chunk) {
            if let Some(outcome) = parser.feed(piece) {
                return Some(outcome);
            }
        }
        None
    }

    #[test]
    fn the_echoed_proposal_is_the_confirmation_however_the_bytes_are_split() {
        let bytes = listener_bytes(&[HEADER, b"na\n", b"/ipfs/ping/1.0.0\n"]);
        for chunk in 1..=bytes.len() {
            assert_eq!(
                feed_in_chunks(&bytes, chunk),
                Some(Outcome::Confirmed("/ipfs/ping/1.0.0".into())),
                "chunks of {chunk} bytes"
            );
        }
    }

    #[test]
    fn the_outcome_comes_with_the_last_byte_of_the_confirmation() {
        let mut bytes = listener_bytes(&[HEADER, b"/echo/1\n"]);
        let last = bytes.pop().expect("a byte");
        let mut parser = ListenerReplies::default();
        assert_eq!(parser.feed(&bytes), None);
        assert_eq!(
            parser.feed(&[last, b'x', b'y']),
            Some(Outcome::Confirmed("/echo/1".into()))
        );
    }

    #[test]
    fn an_ls_answer_is_not_a_confirmation() {
        // An `ls` answer for one protocol of 46 bytes starts with the varint 47, which is `/`.
        let name = format!("/{}", "p".repeat(45));
        let mut list = frame(format!("{name}\n").as_bytes());
        list.push(b'\n');
        assert_eq!(list[0], b'/');
        let bytes = listener_bytes(&[HEADER, &list, b"/kad/1.0.0\n"]);
        assert_eq!(
            feed_in_chunks(&bytes, 3),
            Some(Outcome::Confirmed("/kad/1.0.0".into()))
        );
    }

    #[test]
    fn long_protocol_names_use_two_length_bytes() {
        let name = format!("/{}", "x".repeat(300));
        let confirmation = format!("{name}\n");
        let bytes = listener_bytes(&[HEADER, confirmation.as_bytes()]);
        assert_eq!(feed_in_chunks(&bytes, 7), Some(Outcome::Confirmed(name)));
    }

    #[test]
    fn bytes_that_are_not_multistream_select_end_the_parse() {
        assert_eq!(
            feed_in_chunks(b"\x05hello world", 4),
            Some(Outcome::NotMultistream)
        );
        assert_eq!(
            feed_in_chunks(&[0xff, 0xff, 0x01], 1),
            Some(Outcome::NotMultistream)
        );
        assert_eq!(feed_in_chunks(&[0], 1), Some(Outcome::NotMultistream));
        let not_utf8 = listener_bytes(&[HEADER, b"/\xff\n"]);
        assert_eq!(feed_in_chunks(&not_utf8, 2), Some(Outcome::NotMultistream));
    }

    #[test]
    fn an_unfinished_negotiation_has_no_outcome_yet() {
        let bytes = listener_bytes(&[HEADER, b"na\n"]);
        assert_eq!(feed_in_chunks(&bytes, 5), None);
    }
}
