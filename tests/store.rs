//! One store test suite, run against the filesystem store and against the S3 store
//! on a real S3-compatible server (s3s-fs, which checks SigV4 signatures).

mod common;

use std::path::Path;

use bytes::Bytes;
use media_node::store::{
    ObjectKey, PutOptions, Store, StoreError, Visibility, fs::FsStore, s3::S3Store,
};
use sha2::{Digest, Sha256};

fn key(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible enough, reproducible, no extra dependency.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

async fn suite(store: &dyn Store, tmp: &Path) {
    store.check().await.expect("store reachable");

    // Small objects round-trip with their metadata.
    let k = key("suite/a/small.json");
    let opts = PutOptions {
        content_type: Some("application/json".into()),
        cache_control: Some("max-age=60".into()),
        visibility: Visibility::Public,
        owner: Some("shop:42".into()),
    };
    store
        .put_bytes(&k, Bytes::from_static(b"{\"a\":1}"), &opts)
        .await
        .unwrap();
    assert_eq!(
        store.get_bytes(&k, 1024).await.unwrap().as_ref(),
        b"{\"a\":1}"
    );
    let info = store
        .head(&k)
        .await
        .unwrap()
        .expect("head finds the object");
    assert_eq!(info.size, 7);
    assert_eq!(info.content_type.as_deref(), Some("application/json"));
    assert_eq!(info.cache_control.as_deref(), Some("max-age=60"));
    assert_eq!(info.owner.as_deref(), Some("shop:42"));
    assert_eq!(info.visibility, Visibility::Public);

    // Overwriting replaces data and metadata; default visibility is private.
    store
        .put_bytes(&k, Bytes::from_static(b"[]"), &PutOptions::default())
        .await
        .unwrap();
    let info = store.head(&k).await.unwrap().unwrap();
    assert_eq!(info.size, 2);
    assert_eq!(info.visibility, Visibility::Private);

    // Limits are enforced before reading.
    assert!(matches!(
        store.get_bytes(&k, 1).await,
        Err(StoreError::TooLarge { .. })
    ));

    // Missing objects.
    let missing = key("suite/missing/object.bin");
    assert!(store.head(&missing).await.unwrap().is_none());
    assert!(matches!(
        store.get_bytes(&missing, 1024).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.get_to_file(&missing, &tmp.join("x"), 1024).await,
        Err(StoreError::NotFound(_))
    ));

    // A file over 16 MiB (multipart on S3) round-trips byte for byte.
    let big = pseudo_random(17 * 1024 * 1024 + 12345, 7);
    let src = tmp.join("big.bin");
    std::fs::write(&src, &big).unwrap();
    let big_key = key("suite/big/object.bin");
    let written = store
        .put_file(&big_key, &src, &PutOptions::public_for(&big_key))
        .await
        .unwrap();
    assert_eq!(written, big.len() as u64);
    let dest = tmp.join("big.out");
    let read = store.get_to_file(&big_key, &dest, u64::MAX).await.unwrap();
    assert_eq!(read, big.len() as u64);
    assert_eq!(digest(&std::fs::read(&dest).unwrap()), digest(&big));
    assert!(matches!(
        store.get_to_file(&big_key, &dest, 1024).await,
        Err(StoreError::TooLarge { .. })
    ));

    // Streams of unknown length, in uneven chunks; too-long streams leave nothing.
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..50)
        .map(|i| Ok(Bytes::from(pseudo_random(1000 + i * 37, i as u64 + 1))))
        .collect();
    let expected: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.as_ref().unwrap().to_vec())
        .collect();
    let stream_key = key("suite/stream/upload.mp4");
    let n = store
        .put_stream(
            &stream_key,
            Box::pin(futures_util::stream::iter(chunks)),
            10 * 1024 * 1024,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(n, expected.len() as u64);
    assert_eq!(
        store
            .get_bytes(&stream_key, u64::MAX)
            .await
            .unwrap()
            .as_ref(),
        expected.as_slice()
    );
    let too_long = key("suite/stream/too-long.mp4");
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..10).map(|_| Ok(Bytes::from(vec![0u8; 1000]))).collect();
    let err = store
        .put_stream(
            &too_long,
            Box::pin(futures_util::stream::iter(chunks)),
            5000,
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert!(store.head(&too_long).await.unwrap().is_none());

    // Listing by prefix, in key order, with partial last segments.
    let listed: Vec<String> = store
        .list("suite/")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(
        listed,
        [
            "suite/a/small.json",
            "suite/big/object.bin",
            "suite/stream/upload.mp4"
        ]
    );
    let listed: Vec<String> = store
        .list("suite/st")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(listed, ["suite/stream/upload.mp4"]);
    assert!(store.list("nothing/").await.unwrap().is_empty());

    // A key below an object is no object.
    assert!(matches!(
        store
            .get_bytes(&key("suite/a/small.json/child"), 1024)
            .await
            .unwrap_err(),
        StoreError::NotFound(_)
    ));

    // Deleting is idempotent.
    store.delete(&k).await.unwrap();
    store.delete(&k).await.unwrap();
    assert!(store.head(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn fs_store_passes_the_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FsStore::open(&tmp.path().join("data")).await.unwrap();
    suite(&store, tmp.path()).await;
    assert!(store.local_path(&key("a/b")).is_some());
}

/// On a filesystem `a` and `a/b` cannot both be objects: the second put is a
/// conflict (409 `key_conflict` at the API), never an I/O error, and reads
/// through or at the folder find nothing.
#[tokio::test]
async fn fs_store_refuses_keys_that_collide_as_file_and_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FsStore::open(&tmp.path().join("data")).await.unwrap();
    let opts = PutOptions::default();
    let data = || Bytes::from_static(b"x");

    store.put_bytes(&key("c/x"), data(), &opts).await.unwrap();
    let err = store.put_bytes(&key("c"), data(), &opts).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(matches!(
        store.get_bytes(&key("c"), 10).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    assert!(store.head(&key("c")).await.unwrap().is_none());

    store.put_bytes(&key("d"), data(), &opts).await.unwrap();
    let err = store
        .put_bytes(&key("d/x"), data(), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(matches!(
        store.get_bytes(&key("d/x"), 10).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    assert_eq!(store.get_bytes(&key("d"), 10).await.unwrap(), data());

    // Metadata files sit beside their objects as `<name>.json`: `e.json/x`
    // takes the folder where `e`'s metadata would go.
    store
        .put_bytes(&key("e.json/x"), data(), &opts)
        .await
        .unwrap();
    let err = store.put_bytes(&key("e"), data(), &opts).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(keys, ["c/x", "d", "e.json/x"]);
}

#[tokio::test]
async fn s3_store_passes_the_suite() {
    let s3 = common::S3Server::start().await;
    s3.create_bucket("suite").await;
    let tmp = tempfile::tempdir().unwrap();
    let store = S3Store::open(&s3.config("suite"), &tmp.path().join("spool"))
        .await
        .unwrap();
    suite(&store, tmp.path()).await;
    assert!(store.local_path(&key("a/b")).is_none());
}

#[tokio::test]
async fn s3_store_with_a_prefix_keeps_to_it() {
    let s3 = common::S3Server::start().await;
    s3.create_bucket("shared").await;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = s3.config("shared");
    config.prefix = Some("node-a/".into());
    let a = S3Store::open(&config, &tmp.path().join("a")).await.unwrap();
    config.prefix = Some("node-b".into());
    let b = S3Store::open(&config, &tmp.path().join("b")).await.unwrap();
    let k = key("x/y.txt");
    a.put_bytes(&k, Bytes::from_static(b"a"), &PutOptions::default())
        .await
        .unwrap();
    assert!(b.head(&k).await.unwrap().is_none());
    assert_eq!(a.list("x/").await.unwrap()[0].key, "x/y.txt");
}

#[tokio::test]
async fn s3_errors_are_transient_when_the_server_is_down() {
    let mut s3 = common::S3Server::start().await;
    s3.create_bucket("down").await;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = s3.config("down");
    config.max_attempts = 1;
    config.connect_timeout_ms = 500;
    let store = S3Store::open(&config, tmp.path()).await.unwrap();
    s3.stop();
    let err = store.check().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let err = store
        .put_bytes(&key("a"), Bytes::from_static(b"a"), &PutOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
}
