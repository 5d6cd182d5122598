//! gRPC requests (`content-type: application/grpc…`) answered by Berth itself: instead of a
//! text body, a gRPC "trailers-only" response — HTTP 200 with `grpc-status` and `grpc-message`
//! in its only header block — which every gRPC client reads as the call's status. The codes
//! follow gRPC's mapping of HTTP statuses (`doc/http-grpc-status-mapping.md`): 404 →
//! UNIMPLEMENTED (12), 429/502/503/504 → UNAVAILABLE (14), 400 → INTERNAL (13), others
//! UNKNOWN (2). This module depends on no other module of the gateway.
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

/// What gRPC percent-encodes in `grpc-message`: bytes outside 0x20–0x7E, and `%`.
const MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// True for a gRPC request (`application/grpc`, `application/grpc+proto`, …).
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status code for Berth's HTTP status `status`.
pub fn status_for(status: u16) -> u8 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// Answer a gRPC call with HTTP status `status`'s gRPC code and `message` (a trailers-only
/// response: nothing follows the header block).
pub async fn respond(session: &mut Session, status: u16, message: &str) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", status_for(status).to_string())?;
    let message = utf8_percent_encode(message.trim_end(), MESSAGE).to_string();
    resp.insert_header("grpc-message", message)?;
    session.set_keepalive(None);
    // The end of the stream with the header block (on HTTP/2: HEADERS with END_STREAM).
    session.write_response_header(Box::new(resp), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_detection() {
        assert_eq!(status_for(503), 14);
        assert_eq!(status_for(502), 14);
        assert_eq!(status_for(404), 12);
        assert_eq!(status_for(414), 2);
        let mut req = RequestHeader::build("POST", b"/echo.Echo/Unary", None).expect("head");
        assert!(!is_grpc(&req));
        req.insert_header("content-type", "application/grpc+proto")
            .expect("header");
        assert!(is_grpc(&req));
        let m = utf8_percent_encode("50% off; ünïcode", MESSAGE).to_string();
        assert_eq!(m, "50%25 off; %C3%BCn%C3%AFcode");
    }
}
