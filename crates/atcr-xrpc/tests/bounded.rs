//! A PDS answering `getBlob` with more than the caller takes: refused
//! while reading, with a length announced or not.

use atcr_xrpc::{ClientError, PdsClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A server answering every request with `len` bytes (announced or not).
async fn server(len: usize, announce: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let head = if announce {
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
                } else {
                    "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned()
                };
                let _ = c.write_all(head.as_bytes()).await;
                let chunk = vec![7u8; 64 * 1024];
                let mut sent = 0;
                while sent < len {
                    let n = chunk.len().min(len - sent);
                    if c.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
            });
        }
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn a_blob_over_the_limit_is_refused_while_reading() {
    for announce in [true, false] {
        let url = server(4 << 20, announce).await;
        let c = PdsClient::new(
            url.parse().unwrap(),
            atcr_http::client(std::time::Duration::from_secs(10)),
        );
        match c.get_blob_at_most("did:plc:x", "bafk", 1 << 20).await {
            Err(ClientError::Decode { reason, .. }) => {
                assert!(reason.contains("larger than"), "{reason}")
            }
            other => panic!("announce={announce}: {other:?}"),
        }
        let got = c
            .get_blob_at_most("did:plc:x", "bafk", 8 << 20)
            .await
            .unwrap();
        assert_eq!(got.len(), 4 << 20);
    }
}
