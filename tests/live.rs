//! Live streams end to end: the real node, ffmpeg as the RTMP publisher, the
//! filesystem store or a real S3-compatible server, ffprobe/ffmpeg as players.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::live::*;
use common::{Node, S3Server, TOKEN, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn rtmp_publish_is_relayed_live_and_leaves_a_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .env("MEDIA_NODE_PIPELINES_DIR", quick_profile(tmp.path(), 2.0))
        .start()
        .await;
    let created = create_stream(&node, "quick").await;
    let id = created["id"].as_str().unwrap().to_string();
    let key = created["stream_key"].as_str().unwrap();
    assert!(key.len() >= 22, "at least 128 bits: {key}");
    let rtmp_url = created["rtmp_url"].as_str().unwrap();
    assert!(rtmp_url.starts_with("rtmp://127.0.0.1:"), "{rtmp_url}");
    assert!(rtmp_url.ends_with(&format!("/live/{key}")), "{rtmp_url}");
    assert_eq!(created["state"], "idle");
    assert_eq!(created["playlist_key"], format!("live/{id}/index.m3u8"));
    assert_eq!(created["replay_key"], format!("live/{id}/replay.m3u8"));
    let playlist_url = created["playlist_url"].as_str().unwrap().to_string();
    let replay_url = created["replay_url"].as_str().unwrap().to_string();
    // The key is never shown again.
    assert!(stream(&node, &id).await.get("stream_key").is_none());

    let publisher = publish(rtmp_url, 30);
    let live = wait_state(&node, &id, "live", Duration::from_secs(20)).await;
    let went_live = Instant::now();
    assert!(live["started_at"].is_string(), "{live}");

    // The first segment reaches the store within two segment durations of the
    // first frame (plus polling slack).
    let first = node.url(&format!("/media/live/{id}/00000000.ts"));
    eventually(Duration::from_secs(20), "the first segment", || async {
        let res = node.client.head(&first).send().await.ok()?;
        res.status().is_success().then_some(())
    })
    .await;
    let first_after = went_live.elapsed();
    eprintln!("first segment stored {first_after:?} after the stream went live");
    assert!(
        first_after.as_secs_f64() <= 2.0 * SEGMENT_S + 1.0,
        "first segment after {first_after:?}"
    );

    // A product pinned live.
    let pins = node.url(&format!("/v1/live/streams/{id}/pins"));
    let pin = json!({
        "id": "pin-1", "product_id": "p-42", "title": "Blender \"Pro\" 3000",
        "price": {"amount": "49.99", "currency": "USD"}, "sponsored": true,
        "position": {"x": 0.05, "y": 0.7}
    });
    let res = node
        .client
        .post(&pins)
        .bearer_auth(TOKEN)
        .json(&pin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["start"].is_string() && body.get("end").is_none(),
        "{body}"
    );
    let res = node
        .client
        .post(&pins)
        .bearer_auth(TOKEN)
        .json(&pin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let mut bad = pin.clone();
    bad["id"] = "pin-2".into();
    bad["price"]["amount"] = "4.999".into();
    let res = node
        .client
        .post(&pins)
        .bearer_auth(TOKEN)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "price.amount", "{body}");

    // Mid-stream: ffmpeg plays the live playlist, and the status tells the truth.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let res = node.client.get(&playlist_url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[reqwest::header::CACHE_CONTROL],
        "public, max-age=1"
    );
    let text = res.text().await.unwrap();
    let live_playlist = media_playlist(&text);
    assert!(!live_playlist.end_list);
    assert!(
        text.contains("ID=\"pin-1\",CLASS=\"com.media-node.product-tag\",START-DATE=")
            && text.contains("X-PRODUCT-ID=\"p-42\"")
            && text.contains("X-SPONSORED=\"YES\""),
        "the pin is not in the live playlist:\n{text}"
    );
    let res = node
        .client
        .delete(format!("{pins}/pin-1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert!(body["end"].is_string(), "{body}");
    assert!(live_playlist.segments.len() >= 3, "{text}");
    let play = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i", &playlist_url])
        .args(["-t", "3", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        play.status.success(),
        "ffmpeg cannot play the live playlist: {}",
        String::from_utf8_lossy(&play.stderr)
    );
    let s = stream(&node, &id).await;
    assert_eq!(s["state"], "live");
    assert!(s["segments_uploaded"].as_u64().unwrap() >= 3, "{s}");
    assert!(
        s["upload_lag_ms"].is_u64() && s["spool_bytes"].is_u64(),
        "{s}"
    );
    assert!(
        s["input"]["video_codec"]
            .as_str()
            .unwrap()
            .starts_with("avc1."),
        "{s}"
    );
    assert_eq!(s["input"]["audio_codec"], "mp4a.40.2", "{s}");
    // The live poster, next to the playlist.
    let poster_url = s["poster_url"].as_str().unwrap();
    let res = node.client.get(poster_url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "no live poster");
    assert_eq!(res.headers()[reqwest::header::CONTENT_TYPE], "image/jpeg");
    let poster = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
    assert_eq!((poster.width(), poster.height()), (320, 180));
    let seg = node.client.head(&first).send().await.unwrap();
    assert_eq!(
        seg.headers()[reqwest::header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );

    let (ok, err) = finished(publisher, Duration::from_secs(60)).await;
    assert!(ok, "publisher failed: {err}");
    let ended = wait_state(&node, &id, "ended", Duration::from_secs(30)).await;
    assert_eq!(ended["end_reason"], "publisher_left");
    let ended = wait_replay(&node, &id, Duration::from_secs(30)).await;
    assert_eq!(ended["upload_lag_ms"], 0);
    assert_eq!(ended["spool_bytes"], 0);

    let replay_text = node.get_text(&replay_url).await;
    let replay = media_playlist(&replay_text);
    assert_complete(&replay);
    let pin_line = replay_text
        .lines()
        .find(|l| l.contains("ID=\"pin-1\""))
        .unwrap_or_else(|| panic!("the pin is not in the replay:\n{replay_text}"));
    assert!(pin_line.contains("END-DATE="), "{pin_line}");
    assert_eq!(
        replay.segments.len() as u64,
        ended["segments_uploaded"].as_u64().unwrap()
    );
    let duration = ffprobe_duration(&replay_url);
    assert!(
        (duration - 30.0).abs() <= 2.0,
        "replay lasts {duration} s:\n{replay_text}"
    );
    // The live playlist ends too, so players stop polling.
    let text = node.get_text(&playlist_url).await;
    assert!(media_playlist(&text).end_list, "{text}");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("media_node_live_publishes_total{protocol=\"rtmp\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn wrong_keys_and_hijacks_are_refused_without_disturbing_the_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .env("MEDIA_NODE_PIPELINES_DIR", quick_profile(tmp.path(), 2.0))
        .start()
        .await;
    let created = create_stream(&node, "quick").await;
    let id = created["id"].as_str().unwrap().to_string();
    let rtmp_url = created["rtmp_url"].as_str().unwrap().to_string();
    let base = rtmp_url.rsplit_once('/').unwrap().0.to_string();

    let publisher = publish(&rtmp_url, 16);
    wait_state(&node, &id, "live", Duration::from_secs(20)).await;

    // Wrong keys: refused, ffmpeg gives up with an error.
    for bad in ["not-a-key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let (ok, err) = finished(
            publish(&format!("{base}/{bad}"), 5),
            Duration::from_secs(60),
        )
        .await;
        assert!(!ok, "a wrong key was accepted: {err}");
    }
    // A second publisher on the live key: refused too.
    let (ok, err) = finished(publish(&rtmp_url, 5), Duration::from_secs(60)).await;
    assert!(!ok, "a hijack was accepted: {err}");

    // The first publisher never noticed.
    let (ok, err) = finished(publisher, Duration::from_secs(60)).await;
    assert!(ok, "the first publisher was disturbed: {err}");
    wait_state(&node, &id, "ended", Duration::from_secs(30)).await;
    let ended = wait_replay(&node, &id, Duration::from_secs(30)).await;
    let replay_url = ended["replay_url"].as_str().unwrap();
    let text = node.get_text(replay_url).await;
    assert_complete(&media_playlist(&text));
    let duration = ffprobe_duration(replay_url);
    assert!((duration - 16.0).abs() <= 2.0, "replay lasts {duration} s");

    let metrics = node.metrics().await;
    assert!(
        metrics.contains("media_node_live_publish_refused_total{reason=\"unknown_key\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("media_node_live_publish_refused_total{reason=\"already_live\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn deleting_a_stream_ends_it_and_revokes_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .env("MEDIA_NODE_PIPELINES_DIR", quick_profile(tmp.path(), 30.0))
        .start()
        .await;
    let created = create_stream(&node, "quick").await;
    let id = created["id"].as_str().unwrap().to_string();
    let rtmp_url = created["rtmp_url"].as_str().unwrap().to_string();
    let publisher = publish(&rtmp_url, 60);
    wait_state(&node, &id, "live", Duration::from_secs(20)).await;
    eventually(Duration::from_secs(20), "two segments", || async {
        let s = stream(&node, &id).await;
        (s["segments_uploaded"].as_u64()? >= 2).then_some(())
    })
    .await;

    let res = node
        .client
        .delete(node.url(&format!("/v1/live/streams/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["state"], "ended");
    assert_eq!(body["end_reason"], "deleted");
    // The publisher is dropped at once, not after the reconnect window...
    let (_, _) = finished(publisher, Duration::from_secs(30)).await;
    // ...and cannot come back.
    let (ok, _) = finished(publish(&rtmp_url, 3), Duration::from_secs(60)).await;
    assert!(!ok, "a revoked key was accepted");
    let ended = wait_replay(&node, &id, Duration::from_secs(30)).await;
    assert!(ended["segments_uploaded"].as_u64().unwrap() >= 2);

    // Unknown ids and bad bodies get problem documents.
    let res = node
        .client
        .get(node.url("/v1/live/streams/nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "stream_not_found");
    let res = node
        .client
        .post(node.url("/v1/live/streams"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "x", "profile": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = node
        .client
        .post(node.url("/v1/live/streams"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let list = node.get_json("/v1/live/streams?state=ended").await;
    assert_eq!(list["streams"].as_array().unwrap().len(), 1, "{list}");
}

/// Storage goes away for 20 s in the middle of a 60 s stream: segments wait in
/// the spool and are stored in order when it is back; the live playlist never
/// lists a segment the store does not have; the replay has every segment.
#[tokio::test]
async fn an_s3_outage_loses_nothing_and_playlists_never_lie() {
    let mut s3 = S3Server::start().await;
    s3.create_bucket("live").await;
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .envs(s3.node_env("live"))
        .env("MEDIA_NODE_PIPELINES_DIR", quick_profile(tmp.path(), 2.0))
        .start()
        .await;
    let created = create_stream(&node, "quick").await;
    let id = created["id"].as_str().unwrap().to_string();
    let playlist_key = created["playlist_key"].as_str().unwrap().to_string();
    let replay_key = created["replay_key"].as_str().unwrap().to_string();
    assert!(
        created.get("playlist_url").is_none(),
        "no URL without a CDN base"
    );
    let publisher = publish(created["rtmp_url"].as_str().unwrap(), 60);
    wait_state(&node, &id, "live", Duration::from_secs(20)).await;

    let client = s3.client();
    let started = Instant::now();
    let mut stopped_at = None;
    let mut restarted = false;
    let mut checks = 0;
    let mut max_spool = 0;
    // Poll the live playlist every 500 ms for the whole stream.
    while started.elapsed() < Duration::from_secs(62) {
        let t = started.elapsed();
        if stopped_at.is_none() && t >= Duration::from_secs(20) {
            s3.stop();
            stopped_at = Some(Instant::now());
        }
        if let Some(at) = stopped_at
            && !restarted
            && at.elapsed() >= Duration::from_secs(20)
        {
            s3.restart().await;
            restarted = true;
        }
        if stopped_at.is_some() && !restarted {
            let s = stream(&node, &id).await;
            max_spool = max_spool.max(s["spool_bytes"].as_u64().unwrap_or(0));
        } else if let Ok(obj) = client
            .get_object()
            .bucket("live")
            .key(&playlist_key)
            .send()
            .await
        {
            let body = obj.body.collect().await.unwrap().into_bytes();
            let playlist = media_playlist(&String::from_utf8_lossy(&body));
            let prefix = playlist_key.rsplit_once('/').unwrap().0;
            for seg in &playlist.segments {
                let key = format!("{prefix}/{}", seg.uri);
                let head = client.head_object().bucket("live").key(&key).send().await;
                assert!(
                    head.is_ok(),
                    "the live playlist lists {key}, which is not stored"
                );
                checks += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(restarted && checks > 50, "checked {checks} listed segments");
    assert!(max_spool > 0, "segments never waited in the spool");

    let (ok, err) = finished(publisher, Duration::from_secs(60)).await;
    assert!(ok, "publisher failed: {err}");
    let ended = wait_replay(&node, &id, Duration::from_secs(90)).await;
    assert_eq!(ended["segments_dropped"], 0, "{ended}");
    let obj = client
        .get_object()
        .bucket("live")
        .key(&replay_key)
        .send()
        .await
        .unwrap();
    assert_eq!(obj.cache_control(), Some("public, max-age=300"));
    let body = obj.body.collect().await.unwrap().into_bytes();
    let replay = media_playlist(&String::from_utf8_lossy(&body));
    assert_complete(&replay);
    let total: f32 = replay.segments.iter().map(|s| s.duration).sum();
    assert!((total - 60.0).abs() <= 2.0, "replay lasts {total} s");

    // Timestamps run on without a gap: fetch the segments and ffprobe them as one.
    let dir = tmp.path().join("replay");
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = replay_key.rsplit_once('/').unwrap().0;
    std::fs::write(dir.join("replay.m3u8"), &body).unwrap();
    for seg in &replay.segments {
        let obj = client
            .get_object()
            .bucket("live")
            .key(format!("{prefix}/{}", seg.uri))
            .send()
            .await
            .unwrap();
        let data = obj.body.collect().await.unwrap().into_bytes();
        std::fs::write(dir.join(&seg.uri), data).unwrap();
    }
    let local = dir.join("replay.m3u8").display().to_string();
    let duration = ffprobe_duration(&local);
    assert!((duration - 60.0).abs() <= 2.0, "replay plays {duration} s");
    assert_continuous(&local);
}

/// The node dies (SIGKILL) while the store is down and segments wait in the
/// spool; restarted on the same data dir, it stores them and writes a
/// complete replay.
#[tokio::test]
async fn the_spool_survives_a_crash() {
    let mut s3 = S3Server::start().await;
    s3.create_bucket("crash").await;
    let tmp = tempfile::tempdir().unwrap();
    let pipelines = quick_profile(tmp.path(), 2.0);
    let mut env = s3.node_env("crash");
    env.push(("MEDIA_NODE_PIPELINES_DIR".into(), pipelines));
    let mut node = Node::builder().envs(env.clone()).start().await;
    let created = create_stream(&node, "quick").await;
    let id = created["id"].as_str().unwrap().to_string();
    let replay_key = created["replay_key"].as_str().unwrap().to_string();
    let publisher = publish(created["rtmp_url"].as_str().unwrap(), 12);
    eventually(Duration::from_secs(20), "a stored segment", || async {
        let s = stream(&node, &id).await;
        (s["segments_uploaded"].as_u64()? >= 1).then_some(())
    })
    .await;
    s3.stop();
    let (ok, err) = finished(publisher, Duration::from_secs(60)).await;
    assert!(ok, "publisher failed: {err}");
    let s = wait_state(&node, &id, "ended", Duration::from_secs(30)).await;
    let s = if s["spool_bytes"].as_u64().unwrap_or(0) > 0 {
        s
    } else {
        eventually(Duration::from_secs(10), "spooled segments", || async {
            let s = stream(&node, &id).await;
            (s["spool_bytes"].as_u64()? > 0).then_some(s)
        })
        .await
    };
    assert_eq!(s["replay_ready"], false, "{s}");

    let data_dir = node.data_dir.clone();
    node.kill();
    s3.restart().await;
    let node = Node::builder().envs(env).data_dir(&data_dir).start().await;
    let ended = wait_replay(&node, &id, Duration::from_secs(60)).await;
    assert_eq!(ended["segments_dropped"], 0, "{ended}");
    let obj = s3
        .client()
        .get_object()
        .bucket("crash")
        .key(&replay_key)
        .send()
        .await
        .unwrap();
    let body = obj.body.collect().await.unwrap().into_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let replay = media_playlist(&text);
    assert_complete(&replay);
    let total: f32 = replay.segments.iter().map(|s| s.duration).sum();
    assert!(
        (total - 12.0).abs() <= 2.0,
        "replay lasts {total} s:\n{text}"
    );
    let prefix = replay_key.rsplit_once('/').unwrap().0;
    for seg in &replay.segments {
        let head = s3
            .client()
            .head_object()
            .bucket("crash")
            .key(format!("{prefix}/{}", seg.uri))
            .send()
            .await;
        assert!(head.is_ok(), "{} is not stored", seg.uri);
    }
    assert!(
        !data_dir.join(format!("live/spool/{id}")).exists(),
        "the spool keeps the stream"
    );
}

#[tokio::test]
async fn srt_publish_is_relayed_live_and_leaves_a_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .env("MEDIA_NODE_PIPELINES_DIR", quick_profile(tmp.path(), 2.0))
        .start()
        .await;
    let created = create_stream(&node, "quick").await;
    let id = created["id"].as_str().unwrap().to_string();
    let key = created["stream_key"].as_str().unwrap();
    let srt_url = created["srt_url"].as_str().unwrap().to_string();
    assert!(srt_url.starts_with("srt://127.0.0.1:"), "{srt_url}");
    assert!(srt_url.ends_with(&format!("?streamid={key}")), "{srt_url}");
    let playlist_url = created["playlist_url"].as_str().unwrap().to_string();
    let replay_url = created["replay_url"].as_str().unwrap().to_string();
    let base = srt_url.split_once('?').unwrap().0.to_string();

    let publisher = publish_srt(&srt_url, 30);
    wait_state(&node, &id, "live", Duration::from_secs(20)).await;
    let went_live = Instant::now();
    let first = node.url(&format!("/media/live/{id}/00000000.ts"));
    eventually(Duration::from_secs(20), "the first segment", || async {
        let res = node.client.head(&first).send().await.ok()?;
        res.status().is_success().then_some(())
    })
    .await;
    let first_after = went_live.elapsed();
    eprintln!("first SRT segment stored {first_after:?} after the stream went live");
    assert!(first_after.as_secs_f64() <= 2.0 * SEGMENT_S + 1.0);

    // Wrong keys and a hijack over SRT are refused; the stream goes on.
    let (ok, _) = finished(
        publish_srt(
            &format!("{base}?streamid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            5,
        ),
        Duration::from_secs(60),
    )
    .await;
    assert!(!ok, "a wrong SRT key was accepted");
    let (ok, _) = finished(publish_srt(&srt_url, 5), Duration::from_secs(60)).await;
    assert!(!ok, "an SRT hijack was accepted");

    eventually(
        Duration::from_secs(20),
        "a playable live playlist",
        || async {
            let s = stream(&node, &id).await;
            (s["segments_uploaded"].as_u64()? >= 3).then_some(())
        },
    )
    .await;
    let play = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i", &playlist_url])
        .args(["-t", "3", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        play.status.success(),
        "ffmpeg cannot play the live playlist: {}",
        String::from_utf8_lossy(&play.stderr)
    );
    let s = stream(&node, &id).await;
    assert!(
        s["input"]["video_codec"]
            .as_str()
            .unwrap()
            .starts_with("avc1."),
        "{s}"
    );
    assert_eq!(s["input"]["audio_codec"], "mp4a.40.2", "{s}");
    assert_eq!(s["input"]["width"], 640, "{s}");

    let (ok, err) = finished(publisher, Duration::from_secs(60)).await;
    assert!(ok, "SRT publisher failed: {err}");
    let ended = wait_replay(&node, &id, Duration::from_secs(40)).await;
    assert_eq!(ended["end_reason"], "publisher_left");
    let text = node.get_text(&replay_url).await;
    assert_complete(&media_playlist(&text));
    let duration = ffprobe_duration(&replay_url);
    assert!(
        (duration - 30.0).abs() <= 2.0,
        "SRT replay lasts {duration} s:\n{text}"
    );
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("media_node_live_publishes_total{protocol=\"srt\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_transcoding_profile_adds_aligned_renditions_when_a_slot_is_free() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .env("MEDIA_NODE_PIPELINES_DIR", ladder_profile(tmp.path()))
        .env("MEDIA_NODE_LIVE_MAX_TRANSCODES", "1")
        .start()
        .await;
    let first = create_stream(&node, "ladder").await;
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["playlist_key"], format!("live/{id}/index.m3u8"));
    let master_url = first["playlist_url"].as_str().unwrap().to_string();
    let replay_url = first["replay_url"].as_str().unwrap().to_string();
    let publisher = publish(first["rtmp_url"].as_str().unwrap(), 20);
    wait_state(&node, &id, "live", Duration::from_secs(20)).await;

    // The master lists a variant only once its playlist has segments; all
    // three come within a few segments.
    let master = wait_master(&node, &master_url, 3).await;
    assert_eq!(
        variants(&master),
        [
            ("source/index.m3u8".to_string(), "640x360".to_string()),
            ("240p/index.m3u8".to_string(), "426x240".to_string()),
            ("144p/index.m3u8".to_string(), "256x144".to_string()),
        ]
    );
    for v in &master.variants {
        let codecs = v.codecs.as_deref().unwrap_or_default();
        assert!(
            codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"),
            "{codecs}"
        );
    }
    // ffmpeg plays the master (it picks a variant) and a rung on its own.
    let base = master_url.trim_end_matches("index.m3u8");
    let rung_url = format!("{base}240p/index.m3u8");
    let probe = common::media::ffprobe(&rung_url);
    let video = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap_or_else(|| panic!("{probe}"));
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(426), Some(240))
    );
    let play = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i", &master_url])
        .args(["-t", "2", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        play.status.success(),
        "ffmpeg cannot play the master: {}",
        String::from_utf8_lossy(&play.stderr)
    );
    let s = stream(&node, &id).await;
    let renditions = s["renditions"].as_array().unwrap_or_else(|| panic!("{s}"));
    let names: Vec<_> = renditions
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["source", "240p", "144p"]);
    assert_eq!(renditions[1]["encoded"], true, "{s}");
    assert_eq!(
        renditions[1]["playlist_key"],
        format!("live/{id}/240p/index.m3u8")
    );

    // A second such stream finds the node's one transcode slot taken: it is
    // relayed as the source alone.
    let second = create_stream(&node, "ladder").await;
    let id2 = second["id"].as_str().unwrap().to_string();
    let publisher2 = publish(second["rtmp_url"].as_str().unwrap(), 8);
    wait_state(&node, &id2, "live", Duration::from_secs(20)).await;
    let master2_url = second["playlist_url"].as_str().unwrap().to_string();
    let master2 = eventually(Duration::from_secs(30), "the second master", || async {
        let res = node.client.get(&master2_url).send().await.ok()?;
        if !res.status().is_success() {
            return None;
        }
        Some(master_playlist(&res.text().await.ok()?))
    })
    .await;
    assert_eq!(
        variants(&master2),
        [("source/index.m3u8".to_string(), "640x360".to_string())]
    );
    let s2 = stream(&node, &id2).await;
    assert_eq!(s2["renditions"][1]["encoded"], false, "{s2}");

    let (ok, err) = finished(publisher, Duration::from_secs(60)).await;
    assert!(ok, "publisher failed: {err}");
    wait_replay(&node, &id, Duration::from_secs(40)).await;
    let replay = master_playlist(&node.get_text(&replay_url).await);
    assert_eq!(
        variants(&replay),
        [
            ("source/replay.m3u8".to_string(), "640x360".to_string()),
            ("240p/replay.m3u8".to_string(), "426x240".to_string()),
            ("144p/replay.m3u8".to_string(), "256x144".to_string()),
        ]
    );
    // Segment N covers the same time in every rendition.
    let base = replay_url.trim_end_matches("replay.m3u8");
    let source = media_playlist(&node.get_text(&format!("{base}source/replay.m3u8")).await);
    assert_complete(&source);
    for rung in ["240p", "144p"] {
        let url = format!("{base}{rung}/replay.m3u8");
        let text = node.get_text(&url).await;
        // The clip's keyframes are 8 s apart, so the source is cut between
        // them; the rungs got keyframes forced at those cuts.
        assert!(
            text.contains("#EXT-X-INDEPENDENT-SEGMENTS"),
            "{rung}:\n{text}"
        );
        let replay = media_playlist(&text);
        assert_complete(&replay);
        assert_eq!(replay.segments.len(), source.segments.len(), "{rung}");
        for (a, b) in source.segments.iter().zip(&replay.segments) {
            assert!(
                (a.duration - b.duration).abs() < 0.05,
                "{rung} segment {}: {} s vs the source's {} s",
                b.uri,
                b.duration,
                a.duration
            );
        }
        let duration = ffprobe_duration(&url);
        assert!(
            (duration - 20.0).abs() <= 2.0,
            "{rung} replay lasts {duration} s"
        );
    }
    let (ok, err) = finished(publisher2, Duration::from_secs(60)).await;
    assert!(ok, "second publisher failed: {err}");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("media_node_live_transcode_failures_total{reason=\"no_capacity\"} 1"),
        "{metrics}"
    );
}

/// The built-in `ladder` profile, with no `MEDIA_NODE_PIPELINES_DIR` and the
/// node started outside the repository (the harness runs it in an empty
/// directory): the presets a node offers come from its binary alone.
#[tokio::test]
async fn the_built_in_ladder_profile_needs_no_pipelines_dir() {
    let node = Node::start().await;
    let res = node
        .client
        .post(node.url("/v1/live/streams"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "launch", "profile": "no-such-profile"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem = res.text().await.unwrap();
    assert!(problem.contains("default, ladder"), "{problem}");

    let created = create_stream(&node, "ladder").await;
    let id = created["id"].as_str().unwrap().to_string();
    let master_url = created["playlist_url"].as_str().unwrap().to_string();
    let publisher = publish(created["rtmp_url"].as_str().unwrap(), 10);
    wait_state(&node, &id, "live", Duration::from_secs(20)).await;
    let master = wait_master(&node, &master_url, 3).await;
    // pipelines/live/ladder.toml: 480p and 240p, never larger than the
    // 640x360 source.
    assert_eq!(
        variants(&master),
        [
            ("source/index.m3u8".to_string(), "640x360".to_string()),
            ("480p/index.m3u8".to_string(), "640x360".to_string()),
            ("240p/index.m3u8".to_string(), "426x240".to_string()),
        ]
    );
    let s = stream(&node, &id).await;
    let encoded: Vec<_> = s["renditions"]
        .as_array()
        .unwrap_or_else(|| panic!("{s}"))
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["encoded"].as_bool()))
        .collect();
    assert_eq!(
        encoded,
        [
            ("source", Some(false)),
            ("480p", Some(true)),
            ("240p", Some(true))
        ],
        "{s}"
    );
    let (ok, err) = finished(publisher, Duration::from_secs(60)).await;
    assert!(ok, "publisher failed: {err}");
    let ended = wait_replay(&node, &id, Duration::from_secs(40)).await;
    let replay = master_playlist(&node.get_text(ended["replay_url"].as_str().unwrap()).await);
    assert_eq!(replay.variants.len(), 3, "{replay:?}");
}

/// The renditions of a stream are decoded and encoded in a media process of
/// the stream's own (`media-node work-live --stream ID`), confined like a
/// job's. SIGSEGV to it, as a crafted stream would cause in a decoder: the
/// source relay goes on untouched (no segment dropped, timestamps
/// continuous), the node stays healthy, and the rungs come back in a new
/// process at the next keyframe.
#[tokio::test]
async fn a_crashed_stream_media_process_leaves_the_source_going() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .env("MEDIA_NODE_PIPELINES_DIR", ladder_profile(tmp.path()))
        .start()
        .await;
    let created = create_stream(&node, "ladder").await;
    let id = created["id"].as_str().unwrap().to_string();
    let master_url = created["playlist_url"].as_str().unwrap().to_string();
    // Long enough for the rungs to come back: the clip's keyframes are 8 s
    // apart, and a new session starts on one.
    let publisher = publish(created["rtmp_url"].as_str().unwrap(), 40);
    wait_state(&node, &id, "live", Duration::from_secs(20)).await;
    wait_master(&node, &master_url, 3).await;

    let limit = Duration::from_secs(60);
    let media_process = || common::children_of(node.pid(), &[" work-live ", &id]);
    let child = eventually(limit, "the stream's media process", || {
        let found = media_process();
        async move { found.first().copied() }
    })
    .await;
    let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains(TOKEN) && !environ.contains("MEDIA_NODE_"));

    let rung_segments = |s: &Value| s["renditions"][1]["segments_uploaded"].as_u64();
    let before = rung_segments(&stream(&node, &id).await).unwrap();
    common::segv(child);
    // A new process, and the rungs get new segments from it.
    eventually(limit, "a new media process", || {
        let found = media_process();
        async move { found.iter().any(|p| *p != child).then_some(()) }
    })
    .await;
    eventually(limit, "rung segments after the crash", || async {
        let s = stream(&node, &id).await;
        let encoded = s["renditions"][1]["encoded"] == true;
        (encoded && rung_segments(&s)? >= before + 3).then_some(())
    })
    .await;
    assert!(node.get("/healthz").await.status().is_success());

    let (ok, err) = finished(publisher, Duration::from_secs(90)).await;
    assert!(ok, "the publisher was disturbed: {err}");
    let ended = wait_replay(&node, &id, Duration::from_secs(40)).await;
    let base = ended["replay_url"]
        .as_str()
        .unwrap()
        .trim_end_matches("replay.m3u8")
        .to_string();
    let source_url = format!("{base}source/replay.m3u8");
    assert_complete(&media_playlist(&node.get_text(&source_url).await));
    assert_continuous(&source_url);
    let duration = ffprobe_duration(&source_url);
    assert!(
        (duration - 40.0).abs() <= 2.0,
        "the source lasts {duration} s"
    );
    // The rungs' replay has a gap where the process died, and plays.
    let rung = media_playlist(&node.get_text(&format!("{base}240p/replay.m3u8")).await);
    assert!(rung.segments.iter().any(|s| s.discontinuity), "{rung:?}");

    let metrics = node.metrics().await;
    for line in [
        "media_node_child_crashes_total{kind=\"live\",signal=\"SIGSEGV\"} 1",
        "media_node_live_transcode_failures_total{reason=\"crashed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    assert!(!metrics.contains("media_node_live_segments_dropped_total{"));
}
