//! A keep-alive HTTP/1.1 MCP client that delays its ACKs, as most TCP stacks do: after every
//! read it turns Linux's `TCP_QUICKACK` off, so the kernel holds each ACK for up to ~40 ms
//! hoping to piggyback it on data. Against a server that leaves Nagle's algorithm on, every
//! response written in two pieces (headers, then an SSE event) waits for that ACK: each call
//! takes ~40 ms. With `TCP_NODELAY` on the server's sockets it takes what the work takes.
//!
//! Blocking std I/O on one connection, raw HTTP: nothing between the bench and the socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One MCP session over one kept-alive connection.
pub struct DelayedAckClient {
    reader: BufReader<TcpStream>,
    host: String,
    session: Option<String>,
    next_id: u64,
}

impl DelayedAckClient {
    /// Connects to `address` (`127.0.0.1:PORT`), initializes an MCP session (protocol
    /// 2025-11-25) and sends `notifications/initialized`.
    pub fn connect(address: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(address)?;
        let mut client = Self {
            reader: BufReader::new(stream),
            host: address.to_owned(),
            session: None,
            next_id: 0,
        };
        client.quick_ack_off();
        let (headers, _) = client.post(&serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "delayed-ack-bench", "version": "1"}
            }
        }))?;
        client.session = header(&headers, "mcp-session-id");
        client
            .post(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(client)
    }

    /// Calls `tool` with `arguments`; returns how long the whole exchange took (request
    /// written to the last byte of the answer read) and the answer's body.
    pub fn call(
        &mut self,
        tool: &str,
        arguments: serde_json::Value,
    ) -> std::io::Result<(Duration, String)> {
        self.next_id += 1;
        let request = serde_json::json!({
            "jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}
        });
        let started = Instant::now();
        let (_, body) = self.post(&request)?;
        Ok((started.elapsed(), body))
    }

    /// After every read: ACK lazily, as a client that has nothing to send back yet does.
    fn quick_ack_off(&self) {
        let _ = socket2::SockRef::from(self.reader.get_ref()).set_tcp_quickack(false);
    }

    fn post(&mut self, message: &serde_json::Value) -> std::io::Result<(String, String)> {
        let body = message.to_string();
        let mut request = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if let Some(session) = &self.session {
            request.push_str(&format!(
                "Mcp-Session-Id: {session}\r\nMcp-Protocol-Version: 2025-11-25\r\n"
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        let stream = self.reader.get_mut();
        stream.write_all(request.as_bytes())?;
        let headers = self.read_headers()?;
        let body = if header(&headers, "transfer-encoding")
            .is_some_and(|value| value.eq_ignore_ascii_case("chunked"))
        {
            self.read_chunked()?
        } else {
            let length = header(&headers, "content-length")
                .and_then(|value| value.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body)?;
            self.quick_ack_off();
            String::from_utf8_lossy(&body).into_owned()
        };
        if !headers.starts_with("HTTP/1.1 2") {
            return Err(std::io::Error::other(format!(
                "the server refused: {}",
                headers.lines().next().unwrap_or_default()
            )));
        }
        Ok((headers, body))
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.quick_ack_off();
        Ok(line)
    }

    fn read_headers(&mut self) -> std::io::Result<String> {
        let mut headers = String::new();
        loop {
            let line = self.read_line()?;
            if line == "\r\n" {
                return Ok(headers);
            }
            headers.push_str(&line);
        }
    }

    /// A chunked body, up to its last (empty) chunk.
    fn read_chunked(&mut self) -> std::io::Result<String> {
        let mut body = Vec::new();
        loop {
            let size = self.read_line()?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk)?;
            self.quick_ack_off();
            if size == 0 {
                return Ok(String::from_utf8_lossy(&body).into_owned());
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

/// A header's value (case-insensitive name).
fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}
