output "models_pvc" {
  description = "The PersistentVolumeClaim holding the checkpoints (bound to the EFS file system)."
  value       = kubernetes_persistent_volume_claim.models.metadata[0].name
}

output "models_file_system_id" {
  description = "The EFS file system holding the checkpoints."
  value       = aws_efs_file_system.models.id
}

output "files_bucket" {
  description = "The S3 bucket holding batch files and LoRA adapters."
  value       = aws_s3_bucket.files.bucket
}

output "storage_url" {
  description = "ossfleet's batch.storage_url for the bucket."
  value       = "s3://${aws_s3_bucket.files.bucket}/files"
}
