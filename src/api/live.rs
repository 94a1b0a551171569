//! `/v1/live/streams`: create live streams (and their keys), follow them, end them.

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, Problem};
use super::extract::ValidJson;
use super::owner::ListScope;
use crate::clock::rfc3339;
use crate::live::Track;
use crate::live::pins::PinSpec;
use crate::live::registry::{InputInfo, PinRecord, StreamRecord, StreamState};
use crate::live::relay::StreamKeys;
use crate::presets::Kind;
use crate::validation::FieldError;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStream {
    /// Shown to ops; 1-200 characters.
    #[schema(example = "Spring launch with Ana")]
    pub name: String,
    /// A live profile from `pipelines/live/` (default `default`).
    #[serde(default)]
    #[schema(example = "default")]
    pub profile: Option<String>,
    /// Whose stream it is (`creator:7`). A token bound to an owner creates
    /// for that owner, whatever is given here.
    #[serde(default)]
    #[schema(example = "creator:7", pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub owner: Option<String>,
}

/// A live stream.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StreamView {
    pub id: Uuid,
    pub name: String,
    pub profile: String,
    /// Whose stream it is; absent for nobody's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub state: StreamState,
    pub created_at: String,
    /// When the first publisher connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// `deleted`, `publisher_left` (nobody came back within the reconnect
    /// window) or `node_lost` (its node died and nobody came back: another
    /// node ended it and wrote the replay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// The node relaying the stream (`node_id`), or that relayed it last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Codecs, size and bit rate of what the publisher sends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<InputInfo>,
    /// Segments in the object store.
    pub segments_uploaded: u64,
    /// Segments given up because the spool was full.
    pub segments_dropped: u64,
    /// Age of the oldest segment still waiting to be stored (0 when none is).
    pub upload_lag_ms: u64,
    /// Bytes of this stream waiting in the spool.
    pub spool_bytes: u64,
    /// Store key of the live playlist: the media playlist, or with a
    /// transcoding profile the master playlist of the renditions.
    #[schema(example = "live/0190c4d5-…/index.m3u8")]
    pub playlist_key: String,
    /// Where players read it (with the `fs` store, or `live.playback_base_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playlist_url: Option<String>,
    /// Store key of the replay playlist, written when the stream ends.
    pub replay_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_url: Option<String>,
    /// Whether the replay has been written.
    pub replay_ready: bool,
    /// Store key of the live poster (a JPEG of the picture, rewritten every
    /// `poster_interval_s` of the profile while the stream is live).
    pub poster_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poster_url: Option<String>,
    /// With a transcoding profile, while this node relays the stream: the
    /// source, then each rung.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renditions: Option<Vec<RenditionView>>,
}

/// One rendition of a stream whose profile transcodes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RenditionView {
    /// `source` (as published) or a rung of the profile.
    #[schema(example = "240p")]
    pub name: String,
    /// Encoded by this node now. False for the source; for rungs when the
    /// node had no transcode slot free (`live.max_transcodes`), and while
    /// encoding is stopped for the connected publisher (overloaded, or the
    /// stream's media process crashed too often): the stream is then relayed
    /// as the source alone.
    pub encoded: bool,
    /// Store key of its media playlist.
    pub playlist_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// RFC 6381 video codec of an encoded rung.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    pub segments_uploaded: u64,
}

/// A stream just created: the view plus its key and ingest URLs. The key is
/// shown here only; the node keeps a digest of it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedStream {
    #[serde(flatten)]
    pub stream: StreamView,
    /// The secret stream key (192 random bits).
    pub stream_key: String,
    /// `rtmp://HOST:PORT/live/<stream_key>`: OBS "Server" is everything before
    /// the key, "Stream Key" is the key.
    pub rtmp_url: String,
    /// `srt://HOST:PORT?streamid=<stream_key>`: publish MPEG-TS (H.264 +
    /// AAC) as an SRT caller (`ffmpeg ... -f mpegts "<srt_url>"`, OBS with an
    /// SRT server URL). Unencrypted; the key is the access control.
    pub srt_url: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StreamList {
    /// Newest first.
    pub streams: Vec<StreamView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only streams in this state (`idle`, `live`, `ended`).
    state: Option<String>,
    /// At most this many, 1-500 (default 50).
    limit: Option<u32>,
    /// Only this owner's streams.
    #[param(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    owner: Option<String>,
}

fn view(state: &AppState, record: &StreamRecord) -> StreamView {
    let playlist_key = StreamKeys::playlist(record.id);
    let replay_key = StreamKeys::replay(record.id);
    let poster_key = StreamKeys::poster(record.id);
    StreamView {
        id: record.id,
        name: record.name.clone(),
        profile: record.profile.clone(),
        owner: record.owner.clone(),
        state: record.state,
        created_at: rfc3339(record.created_at),
        started_at: record.started_at.map(rfc3339),
        ended_at: record.ended_at.map(rfc3339),
        end_reason: record.end_reason.clone(),
        node: record.node.clone(),
        input: record.input.clone(),
        segments_uploaded: record.segments_uploaded,
        segments_dropped: record.segments_dropped,
        upload_lag_ms: record.upload_lag_ms,
        spool_bytes: record.spool_bytes,
        playlist_url: state.config.playback_url(&playlist_key),
        replay_url: state.config.playback_url(&replay_key),
        playlist_key,
        replay_key,
        replay_ready: record.replay_written,
        poster_url: state.config.playback_url(&poster_key),
        poster_key,
        renditions: state.live.renditions(record.id).map(|list| {
            list.into_iter()
                .map(|r| RenditionView {
                    playlist_key: format!(
                        "{}/index.m3u8",
                        Track::rendition(record.id, &r.name).key_prefix()
                    ),
                    name: r.name,
                    encoded: r.encoded,
                    width: r.width,
                    height: r.height,
                    codec: r.codec,
                    segments_uploaded: r.segments_uploaded,
                })
                .collect()
        }),
    }
}

/// The stream `id`, if it exists and the caller may see it; 404 otherwise.
async fn visible_stream(
    state: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<StreamRecord, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::StreamNotFound)?;
    let record = state.live.get(id).await?;
    if !caller.sees(record.owner.as_deref()) {
        return Err(ApiError::StreamNotFound);
    }
    Ok(record)
}

/// The id of stream `id` for a call that acts on it: read from the registry
/// only for a caller bound to an owner, who must own it (the action itself
/// answers 404 for a missing stream).
async fn stream_id_for(state: &AppState, caller: &Principal, id: &str) -> Result<Uuid, ApiError> {
    if caller.owner.is_some() {
        return Ok(visible_stream(state, caller, id).await?.id);
    }
    Uuid::parse_str(id).map_err(|_| ApiError::StreamNotFound)
}

/// Create a live stream.
///
/// Answers 201 with the stream, its secret key (shown only here) and the
/// ingest URL. Publish H.264 + AAC to `rtmp_url`; the stream goes `live` with
/// the first publisher and `ended` when it is deleted or the publisher stays
/// away longer than the profile's reconnect window.
#[utoipa::path(
    post, path = "/v1/live/streams", tag = "live",
    request_body = NewStream,
    responses(
        (status = 201, description = "Stream created", body = CreatedStream),
        (status = 400, description = "Invalid JSON", body = Problem),
        (status = 401, description = "No or wrong bearer token", body = Problem),
        (status = 422, description = "Invalid fields", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: ValidJson<NewStream>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let owner = caller.owner_for(req.owner)?;
    let mut errors = Vec::new();
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        errors.push(FieldError::new(
            "name",
            format!("must be 1-{MAX_NAME_CHARS} characters"),
        ));
    }
    let profile = req.profile.as_deref().unwrap_or("default");
    if state.presets.live_profile(profile).is_none() {
        let known: Vec<&str> = state.presets.names(Kind::Live);
        errors.push(FieldError::new(
            "profile",
            format!("unknown live profile; known: {}", known.join(", ")),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let (record, key) = state.live.create(name, profile, owner.as_deref()).await?;
    let created = CreatedStream {
        stream: view(&state, &record),
        rtmp_url: format!("{}{key}", state.ingest.rtmp_base),
        srt_url: format!("{}{key}", state.ingest.srt_base),
        stream_key: key,
    };
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/live/streams/{}", record.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Read one live stream.
#[utoipa::path(
    get, path = "/v1/live/streams/{id}", tag = "live",
    params(("id" = Uuid, Path, description = "Stream id")),
    responses(
        (status = 200, description = "The stream", body = StreamView),
        (status = 404, description = "No such stream", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    let record = visible_stream(&state, &caller, &id).await?;
    Ok(Json(view(&state, &record)))
}

/// List live streams, newest first.
#[utoipa::path(
    get, path = "/v1/live/streams", tag = "live",
    params(ListQuery),
    responses(
        (status = 200, description = "Streams", body = StreamList),
        (status = 400, description = "Invalid query", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<StreamList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    let filter = match query.state.as_deref() {
        None | Some("") => None,
        Some("idle") => Some(StreamState::Idle),
        Some("live") => Some(StreamState::Live),
        Some("ended") => Some(StreamState::Ended),
        Some(other) => {
            return Err(ApiError::InvalidQuery(format!(
                "state must be idle, live or ended; got `{other}`"
            )));
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let ListScope::Owner(owner) = caller.list_scope(query.owner) else {
        return Ok(Json(StreamList {
            streams: Vec::new(),
        }));
    };
    let records = state.live.list(filter, owner.as_deref(), limit).await?;
    Ok(Json(StreamList {
        streams: records.iter().map(|r| view(&state, r)).collect(),
    }))
}

/// End a live stream.
///
/// Revokes its key, disconnects its publisher and writes the replay once every
/// segment is stored. Ending an ended stream changes nothing.
#[utoipa::path(
    delete, path = "/v1/live/streams/{id}", tag = "live",
    params(("id" = Uuid, Path, description = "Stream id")),
    responses(
        (status = 200, description = "The stream, now ended", body = StreamView),
        (status = 404, description = "No such stream", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    let id = stream_id_for(&state, &caller, &id).await?;
    let record = state.live.end(id, "deleted").await?;
    Ok(Json(view(&state, &record)))
}

/// A pinned product.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PinView {
    #[serde(flatten)]
    pub pin: PinSpec,
    /// When it was pinned.
    pub start: String,
    /// When it was unpinned (or the stream ended); absent while pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PinList {
    /// In pinning order.
    pub pins: Vec<PinView>,
}

fn pin_view(record: &PinRecord) -> Result<PinView, ApiError> {
    let pin = serde_json::from_str(&record.spec)
        .map_err(|e| ApiError::Internal(format!("stored pin {}: {e}", record.id)))?;
    Ok(PinView {
        pin,
        start: rfc3339(record.start_ms),
        end: record.end_ms.map(rfc3339),
    })
}

/// Pin a product on a live stream.
///
/// From now until it is unpinned (or the stream ends), the live playlist and
/// the replay carry it as an `EXT-X-DATERANGE` of class
/// `com.media-node.product-tag` with `X-PRODUCT-ID`, `X-TITLE`, `X-PRICE`,
/// `X-SPONSORED` (`YES` for paid placements: players must show the
/// disclosure), `X-POS-X`, `X-POS-Y` (and `X-POS-W`, `X-IMAGE` when given).
#[utoipa::path(
    post, path = "/v1/live/streams/{id}/pins", tag = "live",
    params(("id" = Uuid, Path, description = "Stream id")),
    request_body = PinSpec,
    responses(
        (status = 201, description = "Pinned", body = PinView),
        (status = 404, description = "No such stream", body = Problem),
        (status = 409, description = "Stream ended, pin id taken, or too many open pins", body = Problem),
        (status = 422, description = "Invalid fields", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn pin(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    body: ValidJson<PinSpec>,
) -> Result<Response, ApiError> {
    let id = stream_id_for(&state, &caller, &id).await?;
    let spec = body.value;
    spec.validate(&state.presets)
        .map_err(ApiError::validation)?;
    let record = state.live.pin(id, &spec).await?;
    Ok((StatusCode::CREATED, Json(pin_view(&record)?)).into_response())
}

/// List a stream's pins.
#[utoipa::path(
    get, path = "/v1/live/streams/{id}/pins", tag = "live",
    params(("id" = Uuid, Path, description = "Stream id")),
    responses(
        (status = 200, description = "Pins", body = PinList),
        (status = 404, description = "No such stream", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn pins(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<PinList>, ApiError> {
    let id = stream_id_for(&state, &caller, &id).await?;
    let records = state.live.pins(id).await?;
    Ok(Json(PinList {
        pins: records.iter().map(pin_view).collect::<Result<_, _>>()?,
    }))
}

/// Unpin a product.
#[utoipa::path(
    delete, path = "/v1/live/streams/{id}/pins/{pin}", tag = "live",
    params(
        ("id" = Uuid, Path, description = "Stream id"),
        ("pin" = String, Path, description = "Pin id"),
    ),
    responses(
        (status = 200, description = "The pin, now with its end", body = PinView),
        (status = 404, description = "No such stream or pin", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn unpin(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((id, pin)): Path<(String, String)>,
) -> Result<Json<PinView>, ApiError> {
    let id = stream_id_for(&state, &caller, &id).await?;
    let record = state.live.unpin(id, &pin).await?;
    Ok(Json(pin_view(&record)?))
}
