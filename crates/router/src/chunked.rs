//! Where a chunked body ends (RFC 9112 §7.1), found in its bytes as they arrive.
//!
//! The HTTP/1 path (`http1`) forwards chunked bodies as they are, chunk framing included, so it
//! only needs to know where the body ends and, for an HTTP/1.0 client that cannot read chunked
//! framing, which bytes are data. Sizes, extensions and trailers are bounded.

/// Largest chunk size accepted (a larger one is an attack or a bug, never a real body part).
const MAX_CHUNK: u64 = 1 << 40;
/// Bytes of chunk extensions allowed per chunk, and of trailer fields in all.
const MAX_EXTENSION: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of the next chunk's size.
    Size,
    /// Whitespace after the size, before an extension or the line end.
    SizeSpace,
    /// A chunk extension, up to the line end.
    Extension,
    /// The LF that ends the size line.
    SizeLf,
    /// Chunk data.
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    /// The LF of the final empty line.
    EndLf,
    Done,
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

/// Parser state of one chunked body.
#[derive(Debug, Clone, Copy)]
pub struct Chunked {
    state: State,
    /// Size of the chunk being read; then the data left in it.
    size: u64,
    digits: u8,
    extension: usize,
    trailers: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self { state: State::Size, size: 0, digits: 0, extension: 0, trailers: 0 }
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads `input` up to the end of the body at most. Calls `data` with each run of data bytes
    /// and returns how many bytes of `input` belong to the body (all of them unless it ended).
    pub fn feed(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, Malformed> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = (input.len() - at).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                data(&input[at..at + take]);
                at += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = input[at];
            at += 1;
            self.state = match (self.state, byte) {
                (State::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    let digit = (byte as char).to_digit(16).unwrap_or_default();
                    self.size = self.size * 16 + u64::from(digit);
                    self.digits = self.digits.saturating_add(1);
                    if self.size > MAX_CHUNK {
                        return Err(Malformed("chunk too large"));
                    }
                    State::Size
                }
                (State::Size, _) if self.digits == 0 => return Err(Malformed("chunk size expected")),
                (State::Size | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
                (State::Size | State::SizeSpace, b';') => State::Extension,
                (State::Size | State::SizeSpace | State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err(Malformed("bare LF in a chunk extension")),
                (State::Extension, _) => {
                    self.extension += 1;
                    if self.extension > MAX_EXTENSION {
                        return Err(Malformed("chunk extension too long"));
                    }
                    State::Extension
                }
                (State::SizeLf, b'\n') => {
                    self.digits = 0;
                    self.extension = 0;
                    if self.size == 0 { State::TrailerStart } else { State::Data }
                }
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size,
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, b'\n') => {
                    return Err(Malformed("bare LF in a trailer"));
                }
                (State::TrailerStart | State::TrailerLine, _) => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(Malformed("trailers too long"));
                    }
                    State::TrailerLine
                }
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => State::Done,
                _ => return Err(Malformed("unexpected byte in chunk framing")),
            };
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` split at `cut`, returns (bytes consumed, data, done).
    fn run(body: &[u8], cut: usize) -> Result<(usize, Vec<u8>, bool), Malformed> {
        let mut parser = Chunked::default();
        let mut data = Vec::new();
        let first = parser.feed(&body[..cut], |d| data.extend_from_slice(d))?;
        let mut used = first;
        if !parser.is_done() {
            used += parser.feed(&body[cut..], |d| data.extend_from_slice(d))?;
        }
        Ok((used, data, parser.is_done()))
    }

    #[test]
    fn bodies_end_where_their_last_chunk_says_whatever_the_split() {
        let body =
            b"5;name=value\r\nhello\r\nA \r\n, world!!!\r\n0\r\nx-checksum: 1\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - b"GET / HTTP/1.1\r\n".len();
        for cut in 0..=body.len() {
            let (used, data, done) = run(body, cut).unwrap();
            assert!(done, "cut at {cut}");
            assert_eq!(used, end, "cut at {cut}: the next request is not part of the body");
            assert_eq!(data, b"hello, world!!!", "cut at {cut}");
        }
    }

    #[test]
    fn an_unfinished_body_waits_for_more() {
        let mut parser = Chunked::default();
        assert_eq!(parser.feed(b"4\r\nab", |_| {}), Ok(5));
        assert!(!parser.is_done());
        assert_eq!(parser.feed(b"cd\r\n0\r\n", |_| {}), Ok(7));
        assert!(!parser.is_done(), "the final empty line is still missing");
        assert_eq!(parser.feed(b"\r\n", |_| {}), Ok(2));
        assert!(parser.is_done());
    }

    #[test]
    fn malformed_framing_is_refused() {
        for body in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\r\nhelloX\r\n",
            b"5\nhello",
            b"5;ext\nhello",
            b"0\r\nx-bad\n\r\n",
            b"fffffffffffffffffff\r\n",
        ] {
            let mut parser = Chunked::default();
            assert!(parser.feed(body, |_| {}).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }
}
