//! Reading multistream-select as it passes through a substream.
//!
//! multistream-select (the `/multistream/1.0.0` protocol every libp2p substream starts with)
//! sends messages framed by an unsigned-varint length of at most two bytes (so a body of at
//! most 16383 bytes). Both sides start with the header `/multistream/1.0.0\n`. The dialer then
//! proposes protocols one at a time, `<protocol>\n`, and the listener answers each with `na\n`
//! or by echoing it: the echo is the confirmation, and everything after it belongs to the
//! protocol. The dialer may also send `ls\n`, which the listener answers with a list whose
//! body holds several newlines.
//!
//! [`Frames`] follows one direction of that exchange byte by byte, however the bytes are split
//! into reads or writes, and stops at the end of each complete message, saying how many bytes
//! it took, so that the caller can act on a message before the bytes after it (or the message
//! itself) go anywhere. A message is a protocol name by the rule multistream-select itself
//! decodes with: it starts with `/`, ends with `\n` and holds no other newline.
//!
//! It gives up as soon as the bytes cannot be multistream-select (the first message is not the
//! header, a length is longer than two bytes or zero, a protocol name is not UTF-8). It never
//! holds more than one message body, at most 16383 bytes, and never panics: the fuzz target
//! `negotiation` (in `fuzz/`) feeds it arbitrary bytes in arbitrary pieces.

/// Bytes in the length prefix of a message, at most.
const MAX_LENGTH_BYTES: u8 = 2;

/// The header both sides send first.
pub(crate) const HEADER: &[u8] = b"/multistream/1.0.0\n";

/// The listener's rejection of a proposal.
const NOT_AVAILABLE: &[u8] = b"na\n";

/// The dialer's request for the listener's protocols.
const LIST: &[u8] = b"ls\n";

/// The listener's side of a refusal that has confirmed nothing yet, framed: the header, then
/// `na`. A dialer that reads it tries its next protocol or fails the negotiation as
/// unsupported.
pub(crate) const REFUSAL: &[u8] = b"\x13/multistream/1.0.0\n\x03na\n";

/// `na`, framed: the refusal of a proposal once the header has been sent.
pub(crate) const FRAMED_NOT_AVAILABLE: &[u8] = b"\x03na\n";

/// One complete message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// `/multistream/1.0.0`.
    Header,
    /// `na`: the listener rejects the proposal.
    NotAvailable,
    /// `ls`: the dialer asks for the listener's protocols.
    List,
    /// A protocol name: a proposal from the dialer, a confirmation from the listener.
    Protocol(String),
    /// Anything else multistream-select may send (a list of protocols).
    Other,
}

/// What a [`Frames`] found at the end of what it was fed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A message ended at the last byte taken.
    Message(Message),
    /// The bytes are not multistream-select: nothing more can be learned.
    NotMultistream,
}

/// Where the parser is within the current message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// Reading the length prefix: the value so far and how many bytes it took.
    Length { value: usize, bytes: u8 },
    /// Reading a body of `remaining` more bytes.
    Body { remaining: usize },
}

/// A parser of one direction of a multistream-select negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frames {
    position: Position,
    /// The current message's body so far.
    body: Vec<u8>,
    /// Whether the header has been seen (it must come first).
    seen_header: bool,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            position: Position::Length { value: 0, bytes: 0 },
            body: Vec::new(),
            seen_header: false,
        }
    }
}

impl Frames {
    /// Follows `bytes`, the next bytes of this direction, up to the end of the first message
    /// they complete. Returns how many bytes it took and, if a message ended there or the
    /// bytes turned out not to be multistream-select, what it found. After
    /// [`Step::NotMultistream`] the parser must not be fed again.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> (usize, Option<Step>) {
        let mut taken = 0;
        while let Some(&first) = bytes.get(taken) {
            match &mut self.position {
                Position::Length { value, bytes: seen } => {
                    *value |= usize::from(first & 0x7f) << (7 * *seen);
                    *seen += 1;
                    taken += 1;
                    if first & 0x80 != 0 {
                        if *seen == MAX_LENGTH_BYTES {
                            return (taken, Some(Step::NotMultistream));
                        }
                        continue;
                    }
                    if *value == 0 {
                        return (taken, Some(Step::NotMultistream));
                    }
                    self.position = Position::Body { remaining: *value };
                    self.body.clear();
                }
                Position::Body { remaining } => {
                    let rest = &bytes[taken..];
                    let take = (*remaining).min(rest.len());
                    self.body.extend_from_slice(&rest[..take]);
                    *remaining -= take;
                    taken += take;
                    if *remaining == 0 {
                        self.position = Position::Length { value: 0, bytes: 0 };
                        return (taken, Some(self.message_complete()));
                    }
                }
            }
        }
        (taken, None)
    }

    /// Whether the parser is between two messages (nothing of a next message seen yet).
    pub(crate) fn at_boundary(&self) -> bool {
        self.position == Position::Length { value: 0, bytes: 0 }
    }

    /// Classifies the message now in `body`.
    fn message_complete(&mut self) -> Step {
        let body = std::mem::take(&mut self.body);
        if !self.seen_header {
            if body == HEADER {
                self.seen_header = true;
                return Step::Message(Message::Header);
            }
            return Step::NotMultistream;
        }
        let message = match body.as_slice() {
            HEADER => Message::Header,
            NOT_AVAILABLE => Message::NotAvailable,
            LIST => Message::List,
            [b'/', .., b'\n'] if !body[..body.len() - 1].contains(&b'\n') => {
                let mut name = body;
                name.pop();
                match String::from_utf8(name) {
                    Ok(protocol) => Message::Protocol(protocol),
                    Err(_) => return Step::NotMultistream,
                }
            }
            _ => Message::Other,
        };
        Step::Message(message)
    }
}

/// What can be checked about a [`Frames`] from outside, for the fuzz target: the body it holds
/// is never longer than a message can be.
#[cfg(any(test, fuzzing))]
pub(crate) fn held_bytes(frames: &Frames) -> usize {
    frames.body.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One framed message: its length as an unsigned varint, then the body.
    pub(super) fn frame(body: &[u8]) -> Vec<u8> {
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

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        messages.iter().flat_map(|message| frame(message)).collect()
    }

    /// Every step `bytes` gives, fed in pieces of `chunk` bytes.
    fn steps(bytes: &[u8], chunk: usize) -> Vec<Step> {
        let mut frames = Frames::default();
        let mut found = Vec::new();
        for mut piece in bytes.chunks(chunk) {
            while !piece.is_empty() {
                let (taken, step) = frames.feed(piece);
                assert!(taken > 0 && taken <= piece.len());
                piece = &piece[taken..];
                match step {
                    Some(Step::NotMultistream) => {
                        found.push(Step::NotMultistream);
                        return found;
                    }
                    Some(step) => found.push(step),
                    None => assert!(piece.is_empty()),
                }
            }
        }
        found
    }

    fn protocol(name: &str) -> Step {
        Step::Message(Message::Protocol(name.into()))
    }

    #[test]
    fn every_message_is_found_however_the_bytes_are_split() {
        let bytes = framed(&[HEADER, b"na\n", b"/ipfs/ping/1.0.0\n"]);
        for chunk in 1..=bytes.len() {
            assert_eq!(
                steps(&bytes, chunk),
                vec![
                    Step::Message(Message::Header),
                    Step::Message(Message::NotAvailable),
                    protocol("/ipfs/ping/1.0.0"),
                ],
                "chunks of {chunk} bytes"
            );
        }
    }

    #[test]
    fn a_message_ends_at_its_last_byte_and_the_rest_is_left() {
        let mut bytes = framed(&[HEADER, b"/echo/1\n"]);
        let header_end = 1 + HEADER.len();
        bytes.extend_from_slice(b"data");
        let mut frames = Frames::default();
        assert_eq!(
            frames.feed(&bytes),
            (header_end, Some(Step::Message(Message::Header)))
        );
        assert!(frames.at_boundary());
        let (taken, step) = frames.feed(&bytes[header_end..]);
        assert_eq!(step, Some(protocol("/echo/1")));
        assert_eq!(&bytes[header_end + taken..], b"data");
        let (taken, step) = frames.feed(&bytes[..1]);
        assert_eq!((taken, step), (1, None));
        assert!(!frames.at_boundary());
    }

    #[test]
    fn ls_and_its_answer_are_not_protocols() {
        // An `ls` answer for one protocol of 46 bytes starts with the varint 47, which is `/`.
        let name = format!("/{}", "p".repeat(45));
        let mut list = frame(format!("{name}\n").as_bytes());
        list.push(b'\n');
        assert_eq!(list[0], b'/');
        let bytes = framed(&[HEADER, b"ls\n", &list, b"/kad/1.0.0\n"]);
        assert_eq!(
            steps(&bytes, 3),
            vec![
                Step::Message(Message::Header),
                Step::Message(Message::List),
                Step::Message(Message::Other),
                protocol("/kad/1.0.0"),
            ]
        );
    }

    #[test]
    fn long_protocol_names_use_two_length_bytes() {
        let name = format!("/{}", "x".repeat(300));
        let bytes = framed(&[HEADER, format!("{name}\n").as_bytes()]);
        assert_eq!(steps(&bytes, 7).pop(), Some(protocol(&name)));
    }

    #[test]
    fn bytes_that_are_not_multistream_select_end_the_parse() {
        assert_eq!(steps(b"\x05hello world", 4), vec![Step::NotMultistream]);
        assert_eq!(steps(&[0xff, 0xff, 0x01], 1), vec![Step::NotMultistream]);
        assert_eq!(steps(&[0], 1), vec![Step::NotMultistream]);
        let not_utf8 = framed(&[HEADER, b"/\xff\n"]);
        assert_eq!(steps(&not_utf8, 2).pop(), Some(Step::NotMultistream));
    }

    #[test]
    fn the_refusals_are_what_they_say() {
        assert_eq!(
            steps(REFUSAL, 1),
            vec![
                Step::Message(Message::Header),
                Step::Message(Message::NotAvailable)
            ]
        );
        assert_eq!(FRAMED_NOT_AVAILABLE, frame(b"na\n").as_slice());
    }

    #[test]
    fn the_body_never_exceeds_the_longest_message() {
        let mut frames = Frames::default();
        let (_, step) = frames.feed(&frame(HEADER));
        assert_eq!(step, Some(Step::Message(Message::Header)));
        let longest = vec![b'a'; (1 << 14) - 1];
        let (taken, step) = frames.feed(&frame(&longest));
        assert_eq!(taken, longest.len() + 2);
        assert_eq!(step, Some(Step::Message(Message::Other)));
        assert_eq!(held_bytes(&frames), 0);
    }
}
