//! Answering subscribers' audio NACKs: str0m resends only through RTX, which audio
//! does not negotiate, so the engine writes the lost packet again itself from the
//! down track's history (`router::audio_history`), same SSRC and sequence number.
use str0m::media::MediaKind;
use str0m::rtp::rtcp::Rtcp;
use str0m::rtp::RawPacket;

use super::Core;
use crate::peer::Sink;
use crate::PeerKey;

impl<S: Sink> Core<S> {
    /// A raw RTCP packet from peer `sub`: if it NACKs one of our audio streams to it,
    /// resend what is still kept. Video NACKs are str0m's (RTX).
    pub(super) fn resend_audio(&mut self, sub: PeerKey, raw: &RawPacket) {
        let RawPacket::RtcpRx(Rtcp::Nack(nack)) = raw else { return };
        let Core { router, peers, counters, dirty, .. } = self;
        let Some(peer) = peers.get_mut(&sub).filter(|p| !p.closed) else { return };
        let down = router
            .tracks
            .values()
            .filter(|t| t.kind == MediaKind::Audio)
            .flat_map(|t| t.downs.iter())
            .find(|d| d.sub == sub && d.tx_ssrc == Some(nack.ssrc));
        let Some(history) = down.and_then(|d| d.sent_audio.as_ref()) else { return };
        let Some(last) = history.last_seq() else { return };
        let mut api = peer.rtc.direct_api();
        let Some(tx) = api.stream_tx(&nack.ssrc) else { return };
        let mut resent = 0;
        for entry in nack.reports.iter() {
            for seq in entry.into_iter(last) {
                if let Some(sent) = history.get(*seq) {
                    tx.write_rtp(sent.rewrite());
                    resent += 1;
                }
            }
        }
        counters.audio_resent += resent;
        if resent > 0 && !peer.dirty {
            peer.dirty = true;
            dirty.push(sub);
        }
    }
}
