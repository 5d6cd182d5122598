//! HTTP/1.1 message framing shared by the test client and the demo backend: read a head (start
//! line + headers), find out how its body is framed, read the body. Generic over [`BufRead`] so
//! it is unit-tested on byte slices.
use std::io::{self, BufRead, Read};

/// Longest start line or header line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Most header fields accepted in one head.
const MAX_HEADERS: usize = 256;

/// The start line and header fields of a request or response, in order (names as sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The first value of header `name` (case-insensitive) in a header list.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of header `name` (case-insensitive), in order.
pub fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// True when a comma-separated header (e.g. `Connection`) lists `token` (case-insensitive).
pub fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    header_all(headers, name)
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One line without its `\r\n`; `None` at a clean end of stream before any byte.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n > MAX_LINE {
            invalid("line too long")
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a line")
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Read a message head. `Ok(None)` when the stream ends cleanly before the first byte (the peer
/// closed an idle keep-alive connection).
pub fn read_head<R: BufRead>(r: &mut R) -> io::Result<Option<Head>> {
    let start_line = match read_line(r)? {
        None => return Ok(None),
        Some(l) => l,
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a head")
        })?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(invalid("too many header fields"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("header line without a colon: {line:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Some(Head {
        start_line,
        headers,
    }))
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes (a response with neither length nor chunking).
    UntilEof,
}

/// The framing of a request body (no length and no chunking = no body).
pub fn request_body_kind(headers: &[(String, String)]) -> io::Result<BodyKind> {
    framing(headers, BodyKind::None)
}

/// The framing of a response body to a request with `method`.
pub fn response_body_kind(
    method: &str,
    status: u16,
    headers: &[(String, String)],
) -> io::Result<BodyKind> {
    if method.eq_ignore_ascii_case("HEAD") || (100..200).contains(&status) || status == 204 {
        return Ok(BodyKind::None);
    }
    if status == 304 {
        return Ok(BodyKind::None);
    }
    framing(headers, BodyKind::UntilEof)
}

fn framing(headers: &[(String, String)], otherwise: BodyKind) -> io::Result<BodyKind> {
    if has_token(headers, "transfer-encoding", "chunked") {
        return Ok(BodyKind::Chunked);
    }
    let lengths = header_all(headers, "content-length");
    match lengths.first() {
        None => Ok(otherwise),
        Some(first) => {
            if lengths.iter().any(|l| l != first) {
                return Err(invalid("conflicting Content-Length values"));
            }
            first
                .parse()
                .map(BodyKind::Length)
                .map_err(|_| invalid(format!("bad Content-Length {first:?}")))
        }
    }
}

/// Read a body framed as `kind`.
pub fn read_body<R: BufRead>(r: &mut R, kind: BodyKind) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match kind {
        BodyKind::None => {}
        BodyKind::Length(n) => {
            r.take(n).read_to_end(&mut body)?;
            if body.len() as u64 != n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body ended after {} of {n} bytes", body.len()),
                ));
            }
        }
        BodyKind::UntilEof => {
            r.read_to_end(&mut body)?;
        }
        BodyKind::Chunked => read_chunked(r, &mut body)?,
    }
    Ok(body)
}

fn read_chunked<R: BufRead>(r: &mut R, body: &mut Vec<u8>) -> io::Result<()> {
    let eof = || io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside chunks");
    loop {
        let line = read_line(r)?.ok_or_else(eof)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailer fields, then the empty line.
            while !read_line(r)?.ok_or_else(eof)?.is_empty() {}
            return Ok(());
        }
        let before = body.len();
        r.take(size).read_to_end(body)?;
        if (body.len() - before) as u64 != size {
            return Err(eof());
        }
        if !read_line(r)?.ok_or_else(eof)?.is_empty() {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
}

/// Encode `data` as a chunked body made of chunks of at most `chunk` bytes.
pub fn encode_chunked(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in data.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_head_and_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\nA: 1\r\nSet-Cookie: x=1\r\nset-cookie: y=2\r\nContent-Length: 3\r\n\r\nabcREST";
        let mut r = &raw[..];
        let head = read_head(&mut r).unwrap().unwrap();
        assert_eq!(head.start_line, "HTTP/1.1 200 OK");
        assert_eq!(head.header("a"), Some("1"));
        assert_eq!(header_all(&head.headers, "SET-COOKIE"), vec!["x=1", "y=2"]);
        let kind = response_body_kind("GET", 200, &head.headers).unwrap();
        assert_eq!(kind, BodyKind::Length(3));
        assert_eq!(read_body(&mut r, kind).unwrap(), b"abc");
        assert_eq!(r, b"REST");
    }

    #[test]
    fn reads_chunked_body_with_extensions_and_trailers() {
        let raw = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut r = &raw[..];
        assert_eq!(
            read_body(&mut r, BodyKind::Chunked).unwrap(),
            b"hello world"
        );
        assert_eq!(r, b"NEXT");
        let enc = encode_chunked(b"hello world", 4);
        assert_eq!(
            read_body(&mut &enc[..], BodyKind::Chunked).unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn clean_eof_is_none_and_truncation_is_an_error() {
        assert!(read_head(&mut &b""[..]).unwrap().is_none());
        assert!(read_head(&mut &b"HTTP/1.1 200 OK\r\nA: 1\r\n"[..]).is_err());
        assert!(read_body(&mut &b"ab"[..], BodyKind::Length(3)).is_err());
        assert!(read_body(&mut &b"5\r\nab"[..], BodyKind::Chunked).is_err());
    }

    #[test]
    fn framing_rules() {
        let h = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(request_body_kind(&h(&[])).unwrap(), BodyKind::None);
        assert_eq!(
            response_body_kind("GET", 200, &h(&[])).unwrap(),
            BodyKind::UntilEof
        );
        assert_eq!(
            response_body_kind("HEAD", 200, &h(&[("Content-Length", "9")])).unwrap(),
            BodyKind::None
        );
        assert_eq!(
            request_body_kind(&h(&[("Transfer-Encoding", "gzip, chunked")])).unwrap(),
            BodyKind::Chunked
        );
        assert!(
            request_body_kind(&h(&[("Content-Length", "1"), ("Content-Length", "2")])).is_err()
        );
    }
}
