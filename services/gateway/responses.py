"""The JSON shapes of the TuneScout API, built from the services' answers.

A recognition result carries the original server's fields (song_id, song_name, blob_sha1, offset in
frames, offset_seconds, input_total_hashes, fingerprinted_hashes_in_db, hashes_matched_in_input,
input_confidence, fingerprinted_confidence) so existing clients read it unchanged, and ours beside them.
"""

from __future__ import annotations

from typing import Any

from tunescout.matcher.v1 import matcher_pb2 as m_pb

NO_MATCH_MESSAGE = "No match found: the clip matches no stored track with enough confidence"


def track_result(m: m_pb.TrackMatch) -> dict[str, Any]:
    meta = m.track.metadata
    return {
        "song_id": m.track.track_id,
        "song_name": meta.title or "",
        "blob_sha1": meta.file_sha1,
        "file_sha1": meta.file_sha1,
        "offset": m.offset_frames,
        "offset_seconds": round(m.offset_s, 3),
        "input_total_hashes": m.query_hashes,
        "fingerprinted_hashes_in_db": m.track.n_hashes,
        "hashes_matched_in_input": m.matched_hashes,
        "input_confidence": round(m.query_hash_share, 4),
        "fingerprinted_confidence": round(m.track_hash_share, 6),
        "confidence": round(m.confidence, 4),
        "title": meta.title or "",
        "artist": meta.artist,
        "album": meta.album,
        "year": meta.year or None,
        "duration_seconds": round(meta.duration_s, 3),
        "shard": m.track.shard,
        "speed": round(m.speed, 4),
        "tempo": round(m.tempo, 4),
    }


def recognition(matches: list[m_pb.TrackMatch], unavailable: list[m_pb.ShardFault]) -> dict[str, Any]:
    """The recognition answer without its token (the token is added once the result is stored)."""
    results = [track_result(m) for m in matches[:3]]
    if results:
        best = results[0]
        message = f"Recognised {best['song_name']!r} at {best['offset_seconds']:.1f} s"
    else:
        message = NO_MATCH_MESSAGE
    body: dict[str, Any] = {"status": "success", "results": results, "message": message}
    if unavailable:
        body["unavailable_shards"] = [{"shard": f.shard, "reason": f.reason} for f in unavailable]
        body["message"] += (
            f"; {len(unavailable)} shard(s) did not answer ({', '.join(f.shard for f in unavailable)}), "
            "so a track they hold may be missing"
        )
    return body
