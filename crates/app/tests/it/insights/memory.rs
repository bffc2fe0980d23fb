//! The insights read API over the in-memory store.

#[tokio::test]
async fn insights_api_over_the_memory_store() {
    super::check_all(&[]).await;
}
