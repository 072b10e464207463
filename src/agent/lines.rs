//! A bounded, cancel-safe line reader for an agent's stdout.
//!
//! Lines are split on `\n` over raw bytes, so a multi-byte UTF-8 character split across two
//! reads is reassembled before anyone decodes it. A line longer than the limit is skipped up
//! to its newline and reported as [`Line::TooLong`], never buffered whole.

use tokio::io::{AsyncRead, AsyncReadExt};

/// What [`LineReader::next_line`] yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// One line, without its `\n` (nor a trailing `\r`).
    Data(Vec<u8>),
    /// A line longer than the limit was skipped; `bytes` is its length (at least).
    TooLong {
        /// How many bytes the skipped line had.
        bytes: usize,
    },
}

/// Reads lines from `inner`, never holding more than `max_line` bytes of one line.
///
/// Cancel safety: all progress lives in the struct, and the only await is a single
/// `read_buf`, which either reads nothing or appends to `buffer` before returning.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for a newline (so no byte is scanned twice).
    scanned: usize,
    max_line: usize,
    /// Set while skipping an overlong line: how many bytes were dropped so far.
    skipping: Option<usize>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// A reader that accepts lines of at most `max_line` bytes.
    pub fn new(inner: R, max_line: usize) -> Self {
        Self {
            inner,
            buffer: Vec::with_capacity(8 * 1024),
            scanned: 0,
            max_line: max_line.max(1),
            skipping: None,
            eof: false,
        }
    }

    /// The next line, or `None` at end of stream. A last line without a newline is returned
    /// as a line.
    ///
    /// # Errors
    /// A read error from the underlying stream.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if let Some(line) = self.take_buffered() {
                return Ok(Some(line));
            }
            if self.eof {
                return Ok(self.take_rest());
            }
            let read = self.inner.read_buf(&mut self.buffer).await?;
            if read == 0 {
                self.eof = true;
            }
        }
    }

    /// A complete line (or a finished skip) from what is buffered, if there is one.
    fn take_buffered(&mut self) -> Option<Line> {
        let newline = self.buffer[self.scanned..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map(|offset| self.scanned + offset);
        match (newline, self.skipping) {
            (Some(end), Some(dropped)) => {
                self.buffer.drain(..=end);
                self.scanned = 0;
                self.skipping = None;
                Some(Line::TooLong {
                    bytes: dropped + end,
                })
            }
            (Some(end), None) if end > self.max_line => {
                self.buffer.drain(..=end);
                self.scanned = 0;
                Some(Line::TooLong { bytes: end })
            }
            (Some(end), None) => {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                Some(Line::Data(line))
            }
            (None, Some(dropped)) => {
                self.skipping = Some(dropped + self.buffer.len());
                self.buffer.clear();
                self.scanned = 0;
                None
            }
            (None, None) if self.buffer.len() > self.max_line => {
                self.skipping = Some(self.buffer.len());
                self.buffer.clear();
                self.scanned = 0;
                None
            }
            (None, None) => {
                self.scanned = self.buffer.len();
                None
            }
        }
    }

    /// At end of stream: the unterminated rest, if any.
    fn take_rest(&mut self) -> Option<Line> {
        if let Some(dropped) = self.skipping.take() {
            let bytes = dropped + self.buffer.len();
            self.buffer.clear();
            return Some(Line::TooLong { bytes });
        }
        if self.buffer.is_empty() {
            return None;
        }
        self.scanned = 0;
        Some(Line::Data(std::mem::take(&mut self.buffer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn collect(chunks: Vec<Vec<u8>>, max: usize) -> Vec<Line> {
        let (mut writer, reader) = tokio::io::duplex(64);
        let feeder = tokio::spawn(async move {
            for chunk in chunks {
                writer.write_all(&chunk).await.unwrap();
                writer.flush().await.unwrap();
            }
        });
        let mut lines = LineReader::new(reader, max);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(line);
        }
        feeder.await.unwrap();
        out
    }

    fn data(text: &str) -> Line {
        Line::Data(text.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn splits_lines_across_reads() {
        let lines = collect(
            vec![b"ab".to_vec(), b"c\nde".to_vec(), b"f\n\ng".to_vec()],
            100,
        )
        .await;
        assert_eq!(lines, vec![data("abc"), data("def"), data(""), data("g")]);
    }

    #[tokio::test]
    async fn reassembles_utf8_split_inside_a_character() {
        let text = "héllo ✓\n".as_bytes().to_vec();
        // Split in the middle of the 3-byte check mark.
        let cut = text.len() - 3;
        let lines = collect(vec![text[..cut].to_vec(), text[cut..].to_vec()], 100).await;
        assert_eq!(lines, vec![data("héllo ✓")]);
    }

    #[tokio::test]
    async fn skips_overlong_lines_and_recovers() {
        let long = vec![b'x'; 1000];
        let mut chunks = vec![b"ok\n".to_vec()];
        chunks.extend(long.chunks(7).map(<[u8]>::to_vec));
        chunks.push(b"\nafter\n".to_vec());
        let lines = collect(chunks, 100).await;
        assert_eq!(
            lines,
            vec![data("ok"), Line::TooLong { bytes: 1000 }, data("after")]
        );
    }

    #[tokio::test]
    async fn overlong_line_in_one_chunk() {
        let mut chunk = vec![b'y'; 300];
        chunk.extend_from_slice(b"\nz\n");
        let lines = collect(vec![chunk], 100).await;
        assert_eq!(lines, vec![Line::TooLong { bytes: 300 }, data("z")]);
    }

    #[tokio::test]
    async fn strips_carriage_return() {
        let lines = collect(vec![b"a\r\nb\n".to_vec()], 100).await;
        assert_eq!(lines, vec![data("a"), data("b")]);
    }

    #[tokio::test]
    async fn overlong_unterminated_tail_at_eof() {
        let lines = collect(vec![vec![b'q'; 250]], 100).await;
        assert_eq!(lines, vec![Line::TooLong { bytes: 250 }]);
    }
}
