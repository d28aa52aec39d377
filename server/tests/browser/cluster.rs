//! The page as deployed with more than one instance (issue 12's last test): nginx with
//! `deploy/nginx.conf` serves it over HTTPS and passes the API on to two instances that
//! share the counter through a real Redis. Two tabs whose streams are on different
//! instances see each other's `+1`.

use crate::harness::{Harness, Setup};
use crate::shared::join;

/// How many times the second tab leaves and joins again to get its stream onto the
/// other instance. nginx hands each request to the next instance in turn (per worker
/// process); a tab's page and its stream are two requests, so with two instances both
/// streams usually land on the same one, and one move (one request) puts the second on
/// the other. The bound keeps a balancer that never alternates from looping for ever.
const MOVES: usize = 6;

/// Which instance holds each of the two streams, once both are counted: `[1, 1]` when
/// they are on different instances.
async fn placement(h: &Harness) -> Vec<f64> {
    h.cluster().subscribers(2.0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_on_different_instances_behind_nginx_see_each_others_plus_one() {
    Harness::scenario(Setup::cluster(2), async |h| {
        // Each tab with a stream of its own (`?share=0`): tabs that share would hold one.
        let a = h.tab().await;
        join(h, "/?share=0").await;
        h.wait_text("shared-value", "0").await;
        let b = h.new_tab().await;
        join(h, "/?share=0").await;
        h.wait_text("shared-value", "0").await;

        // Prove where the streams are: each instance counts one shared subscriber. If
        // nginx put both on one instance, tab B leaves and joins again (one new request,
        // which nginx hands to the next instance) until it lands on the other.
        let mut each = placement(h).await;
        let mut moves = 0;
        while each != [1.0, 1.0] {
            assert!(
                moves < MOVES,
                "tab B's stream stayed on the same instance as tab A's after {MOVES} \
                 reconnects through nginx (shared subscribers per instance: {each:?})"
            );
            h.click("shared-leave").await;
            h.wait_text("shared-state", "closed").await;
            h.cluster().subscribers(1.0).await;
            h.click("shared-join").await;
            h.wait_text("shared-state", "open").await;
            each = placement(h).await;
            moves += 1;
        }

        // A +1 in one tab shows in the other, both ways. Both tabs' last event id must
        // reach the value too: that comes only from their streams (the tab that clicked
        // also shows the value from its POST's answer), and the two streams are on
        // different instances, so the change crossed from one instance to the other
        // through Redis whichever instance nginx gave the POST to.
        for (from, to, value) in [(&a, &b, "1"), (&b, &a, "2")] {
            h.switch_to(from).await;
            h.click("shared-increment").await;
            h.switch_to(to).await;
            h.wait_text("shared-value", value).await;
            h.wait_text("shared-last-event-id", value).await;
            h.switch_to(from).await;
            h.wait_text("shared-last-event-id", value).await;
        }
        for (tab, name) in [(&a, "A"), (&b, "B")] {
            h.switch_to(tab).await;
            let seen = h.seen_texts("shared-value").await;
            assert!(
                seen.ends_with(&["0".to_owned(), "1".into(), "2".into()]),
                "tab {name} showed {seen:?}: not 0, 1, 2 at the end"
            );
            assert_eq!(h.text("shared-state").await, "open", "tab {name}");
            assert_eq!(h.text("shared-error").await, "", "tab {name}");
            assert_eq!(h.text("shared-increment-error").await, "", "tab {name}");
        }
        // Still one stream on each instance; the two changes were published by the
        // instances nginx chose, and every instance has the value.
        assert_eq!(placement(h).await, [1.0, 1.0]);
        let published = h.cluster().metric("sse_shared_published_total").await;
        assert_eq!(published.iter().sum::<f64>(), 2.0, "{published:?}");
        assert_eq!(h.cluster().metric("sse_shared_value").await, [2.0, 2.0]);
        assert_eq!(h.cluster().redis.value().await, 2);
    })
    .await;
}
