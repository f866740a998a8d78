output "primary_endpoint" {
  description = "The endpoint clients start from (TLS on port 6379): the primary's, or in cluster mode the configuration endpoint."
  value       = local.endpoint
}

output "url" {
  description = "The URL ossfleet's redis.url takes: rediss://, or rediss+cluster:// in cluster mode (the password comes from the secret)."
  value       = local.url
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
