//! Small SDP helpers: what str0m does not expose directly.
use std::collections::HashMap;

use str0m::Candidate;

use crate::error::{EngineError, Result};

/// Map each `a=mid:` of an SDP to the track id of its `a=msid:<stream> <track>`
/// (or the legacy `a=ssrc:<n> msid:<stream> <track>`). m-lines without msid are absent.
pub fn msid_tracks_by_mid(sdp: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut mid: Option<&str> = None;
    let mut track: Option<&str> = None;
    let mut flush = |mid: &mut Option<&str>, track: &mut Option<&str>| {
        if let (Some(m), Some(t)) = (mid.take(), track.take()) {
            out.insert(m.to_string(), t.to_string());
        }
        *mid = None;
        *track = None;
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            flush(&mut mid, &mut track);
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            mid = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("a=msid:") {
            if let Some(t) = v.split_whitespace().nth(1) {
                track = Some(t);
            }
        } else if let Some(v) = line.strip_prefix("a=ssrc:") {
            if track.is_none() {
                if let Some(rest) = v.split_once(" msid:").map(|(_, r)| r) {
                    track = rest.split_whitespace().nth(1);
                }
            }
        }
    }
    flush(&mut mid, &mut track);
    out
}

/// Parse a trickled candidate (`candidate:...`, optionally with `a=` in front).
pub fn parse_candidate(line: &str) -> Result<Candidate> {
    let s = line.trim();
    let s = s.strip_prefix("a=").unwrap_or(s);
    if !s.starts_with("candidate:") {
        return Err(EngineError::BadCandidate(format!("not a candidate line: {s:?}")));
    }
    Candidate::from_sdp_string(s).map_err(|e| EngineError::BadCandidate(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msid_by_mid() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s1 TR_a\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ssrc:1 msid:s2 cid-b\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        let m = msid_tracks_by_mid(sdp);
        assert_eq!(m.get("0").unwrap(), "TR_a");
        assert_eq!(m.get("1").unwrap(), "cid-b");
        assert!(!m.contains_key("2"));
    }

    #[test]
    fn candidates() {
        assert!(parse_candidate("candidate:1 1 udp 2113929471 203.0.113.100 10100 typ host").is_ok());
        assert!(parse_candidate("a=candidate:1 1 udp 2113929471 ::1 10100 typ host").is_ok());
        assert!(parse_candidate("garbage").is_err());
        assert!(parse_candidate("candidate:").is_err());
        assert!(parse_candidate("").is_err());
    }
}
