//! The insights read API over PostgreSQL (a throwaway database).

#[tokio::test]
async fn insights_api_over_postgresql() {
    let db = tally_tests::pg::fresh_database().await;
    let url = db.url.to_string();
    super::check_all(&["--database-url", &url]).await;
}
