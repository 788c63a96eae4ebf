//! Settling durable deliveries over the bus: leases that end, batch acks,
//! credit coming back, against the real binary.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_tools::bus::BusClient;

use crate::bus::{app, bus_url, ctl, dev, err_code, rt};
use crate::util::*;

/// A dev node with app `shop` allowed to publish and subscribe `jobs`; its
/// bus URL and the app's token.
fn shop_node(tmp: &tempfile::TempDir) -> (Node, String, String) {
    let node = dev(tmp, &[]);
    let url = bus_url(&node);
    let token = app(&node, "shop", &["publish:jobs", "subscribe:jobs"]);
    (node, url, token)
}

/// Publishes `j-0` .. `j-{n-1}` to `jobs` as `shop`; returns the publisher.
async fn published(url: &str, token: &str, n: usize) -> BusClient {
    let shop = BusClient::connect(url, "shop", token).await.unwrap();
    for i in 0..n {
        shop.publish("jobs", format!("j-{i}").as_bytes()).await.unwrap();
    }
    shop
}

/// A lease that ends unsettled frees the subscription's credit: with
/// `max_in_flight = 1` the message comes again instead of the subscription
/// waiting forever, and the new delivery is the one that settles.
#[test]
fn an_expired_lease_frees_its_credit_for_the_next_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[("VIGIL_BUS__TOPIC_DEFAULTS__ACK_WAIT_MS", "300")]);
    let url = bus_url(&node);
    let pub_token = app(&node, "shop", &["publish:jobs"]);
    let w_token = app(&node, "worker", &["subscribe:jobs"]);
    rt().block_on(async {
        let shop = BusClient::connect(&url, "shop", &pub_token).await.unwrap();
        let mut w = BusClient::connect(&url, "worker", &w_token).await.unwrap();
        let s = w.subscribe_with("jobs", None, Some(1)).await.unwrap();
        shop.publish("jobs", b"j-0").await.unwrap();
        shop.publish("jobs", b"j-1").await.unwrap();
        let m = w.next_msg(Duration::from_secs(5)).await.expect("first delivery");
        assert_eq!(
            (m["seq"].as_u64(), m["delivery_count"].as_u64()),
            (Some(0), Some(1))
        );
        let m = w
            .next_msg(Duration::from_secs(5))
            .await
            .expect("delivered again once its lease ended");
        assert_eq!(
            (m["seq"].as_u64(), m["delivery_count"].as_u64()),
            (Some(0), Some(2))
        );
        w.ack(s, 0).await.unwrap();
        let m = w
            .next_msg(Duration::from_secs(5))
            .await
            .expect("then the next one");
        assert_eq!(m["seq"].as_u64(), Some(1));
        w.ack(s, 1).await.unwrap();
    });
}

#[test]
fn one_ack_frame_settles_a_batch_of_deliveries() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url, token) = shop_node(&tmp);
    rt().block_on(async {
        let shop = published(&url, &token, 5).await;
        let mut w = BusClient::connect(&url, "shop", &token).await.unwrap();
        let s = w.subscribe("jobs", None).await.unwrap();
        for i in 0..5 {
            let m = w.next_msg(Duration::from_secs(5)).await.expect("delivered");
            assert_eq!(m["seq"], i);
        }
        // Another session of the same group holds none of them (w has all five).
        let other = shop.subscribe("jobs", None).await.unwrap();
        let (acked, not) = shop.ack_many(other, &[0, 1]).await.unwrap();
        assert_eq!((acked, not), (0, vec![0, 1]));

        let (acked, not) = w.ack_many(s, &[2, 0, 1, 0, 99]).await.unwrap();
        assert_eq!(
            (acked, not),
            (3, vec![99]),
            "duplicates count once; 99 is not held"
        );
        let e = w.ack(s, 1).await.unwrap_err();
        assert_eq!(err_code(&e), "not_pending", "{e}");
        for bad in [
            json!({ "op": "ack", "sub": s, "seq": 3, "seqs": [4] }),
            json!({ "op": "ack", "sub": s }),
            json!({ "op": "ack", "sub": s, "seqs": (0..4097).collect::<Vec<u64>>() }),
        ] {
            let e = w.call(bad).await.unwrap_err();
            assert_eq!(err_code(&e), "bad_frame", "{e}");
        }
        let (acked, not) = w.ack_many(s, &[3, 4]).await.unwrap();
        assert_eq!((acked, not), (2, vec![]));
    });
    let stats: Value =
        serde_json::from_str(&stdout(&ctl(&node, &["queue", "stats", "jobs", "--json"]))).unwrap();
    let group = stats[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "shop")
        .unwrap()
        .clone();
    assert_eq!(group["acked"], 5, "{group}");
    assert_eq!(group["in_flight"], 0, "{group}");
}

/// With `max_in_flight = 1` each ack's credit reaches the consumer at once:
/// the next delivery does not wait for the consumer's once-a-second look.
#[test]
fn each_ack_lets_the_next_delivery_through_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (_node, url, token) = shop_node(&tmp);
    rt().block_on(async {
        published(&url, &token, 30).await;
        let mut w = BusClient::connect(&url, "shop", &token).await.unwrap();
        let s = w.subscribe_with("jobs", None, Some(1)).await.unwrap();
        let t0 = Instant::now();
        for i in 0..30u64 {
            let m = w.next_msg(Duration::from_secs(5)).await.expect("delivered");
            assert_eq!(m["seq"], i);
            if i % 2 == 0 {
                w.ack(s, i).await.unwrap();
            } else {
                assert_eq!(w.ack_many(s, &[i]).await.unwrap(), (1, vec![]));
            }
        }
        // 30 one-second waits if a credit were missed each time; even a
        // stalled machine does these 30 round trips in well under that.
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        t0.elapsed()
    });
}
