output "primary_endpoint" {
  description = "Primary endpoint address (TLS on port 6379)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "url" {
  description = "The rediss:// URL ossfleet's redis.url takes (the password comes from the secret)."
  value       = "rediss://${aws_elasticache_replication_group.this.primary_endpoint_address}:6379/0"
}

output "secret_arn" {
  description = "Secrets Manager secret holding the AUTH token and URL."
  value       = aws_secretsmanager_secret.redis.arn
}

output "secret_name" {
  description = "Name of that secret."
  value       = aws_secretsmanager_secret.redis.name
}

output "auth_token" {
  description = "The AUTH token, for the Kubernetes secret the pods read."
  value       = random_password.auth.result
  sensitive   = true
}
