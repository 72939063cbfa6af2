output "hostname" {
  value = timescale_service.db.hostname
}

output "db_url" {
  description = "TRADEFLEET_DB_URL for the tradefleet-db secret (cloud-fleet's db_url)"
  value       = "postgresql://${timescale_service.db.username}:${urlencode(timescale_service.db.password)}@${timescale_service.db.hostname}:${timescale_service.db.port}/tsdb?sslmode=require"
  sensitive   = true
}
