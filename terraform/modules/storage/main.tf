# Where the pods' files live. The model checkpoints: an EFS file system, mounted through the EFS CSI
# driver as the PersistentVolumeClaim the RayService's pods mount read-only at /models (a static volume:
# nothing is provisioned per pod). Batch files and tenants' LoRA adapters: an S3 bucket (ossfleet's
# batch.storage_url), which the Ray pods' service account reaches through EKS Pod Identity. Both are
# encrypted with a key of this module's.
#
# EFS rather than FSx for Lustre: no capacity to choose up front, no S3 import step, and a
# checkpoint is read once per replica start; FSx's higher throughput shortens cold starts of the 65 GB
# gpt-oss-120b checkpoint if that matters more than its fixed cost.

data "aws_caller_identity" "current" {}

resource "aws_kms_key" "storage" {
  description         = "${var.name} model checkpoints and files"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.kms.json
  tags                = var.tags
}

# The account administers the key; EFS, S3 and the pods' role use it through IAM permissions.
data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:A key policy's "*" resource is this key alone (AWS's default key policy shape).
  #checkov:skip=CKV_AWS_356:A key policy's "*" resource is this key alone (AWS's default key policy shape).
  #checkov:skip=CKV_AWS_109:The account root administers its own key, as AWS's default key policy does.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

# -- model checkpoints: EFS ------------------------------------------------------------------------

resource "aws_efs_file_system" "models" {
  #checkov:skip=CKV2_AWS_18:Checkpoints are public releases, downloaded again in minutes; a backup would only cost.
  creation_token  = "${var.name}-models"
  encrypted       = true
  kms_key_id      = aws_kms_key.storage.arn
  throughput_mode = "elastic"
  tags            = merge(var.tags, { Name = "${var.name}-models" })
}

resource "aws_security_group" "efs" {
  name_prefix = "${var.name}-efs-"
  description = "NFS to the models file system from the EKS nodes only"
  vpc_id      = var.vpc_id
  tags        = var.tags

  ingress {
    description     = "NFS from the nodes"
    from_port       = 2049
    to_port         = 2049
    protocol        = "tcp"
    security_groups = var.client_security_group_ids
  }
}

resource "aws_efs_mount_target" "models" {
  count           = length(var.subnet_ids)
  file_system_id  = aws_efs_file_system.models.id
  subnet_id       = var.subnet_ids[count.index]
  security_groups = [aws_security_group.efs.id]
}

data "aws_iam_policy_document" "pod_identity_trust" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

# The EFS CSI driver (its controller creates access points for dynamic volumes; the static volume
# below needs only its node plugin, which mounts over NFS with TLS).
resource "aws_iam_role" "efs_csi" {
  name_prefix        = "${var.name}-efs-csi-"
  assume_role_policy = data.aws_iam_policy_document.pod_identity_trust.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "efs_csi" {
  role       = aws_iam_role.efs_csi.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy"
}

resource "aws_eks_pod_identity_association" "efs_csi" {
  cluster_name    = var.cluster_name
  namespace       = "kube-system"
  service_account = "efs-csi-controller-sa"
  role_arn        = aws_iam_role.efs_csi.arn
  tags            = var.tags
}

resource "aws_eks_addon" "efs_csi" {
  cluster_name = var.cluster_name
  addon_name   = "aws-efs-csi-driver"
  tags         = var.tags

  depends_on = [aws_eks_pod_identity_association.efs_csi]
}

# The pods (and the weights Job) run as uid 1000, gid 100 (the image's `ray` user), and the file system's root
# is root's (0755): through this access point they act as that user, in a /models folder it owns.
resource "aws_efs_access_point" "models" {
  file_system_id = aws_efs_file_system.models.id

  posix_user {
    uid = var.pod_uid
    gid = var.pod_gid
  }
  root_directory {
    path = "/models"
    creation_info {
      owner_uid   = var.pod_uid
      owner_gid   = var.pod_gid
      permissions = "0755"
    }
  }
  tags = var.tags
}

resource "kubernetes_persistent_volume" "models" {
  metadata {
    name = "${var.name}-models"
  }
  spec {
    capacity                         = { storage = var.models_capacity }
    access_modes                     = ["ReadWriteMany"] # pods mount it read-only; a loader job writes
    persistent_volume_reclaim_policy = "Retain"
    storage_class_name               = "efs-static"
    persistent_volume_source {
      csi {
        driver        = "efs.csi.aws.com"
        volume_handle = "${aws_efs_file_system.models.id}::${aws_efs_access_point.models.id}"
      }
    }
  }

  depends_on = [aws_eks_addon.efs_csi, aws_efs_mount_target.models]
}

resource "kubernetes_persistent_volume_claim" "models" {
  metadata {
    name      = var.models_pvc
    namespace = var.namespace
  }
  spec {
    access_modes       = ["ReadWriteMany"]
    storage_class_name = "efs-static"
    volume_name        = kubernetes_persistent_volume.models.metadata[0].name
    resources {
      requests = { storage = var.models_capacity }
    }
  }
}

# -- batch files and LoRA adapters: S3 -------------------------------------------------------------

resource "aws_s3_bucket" "files" {
  #checkov:skip=CKV_AWS_18:Every write comes from the platform's own pods; access is audited through CloudTrail data events if wanted.
  #checkov:skip=CKV_AWS_144:Batch files and adapters are working data of one region's platform; cross-region copies are the operator's choice.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events; the platform tracks its files in Redis.
  bucket_prefix = "${var.name}-files-"
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "files" {
  bucket                  = aws_s3_bucket.files.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "files" {
  bucket = aws_s3_bucket.files.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "files" {
  bucket = aws_s3_bucket.files.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.storage.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "files" {
  bucket = aws_s3_bucket.files.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "files" {
  bucket = aws_s3_bucket.files.id
  rule {
    id     = "expire-replaced-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.files]
}

# The Ray pods (gateways write uploads, replicas read adapters, batch drivers both): this bucket only.
data "aws_iam_policy_document" "files" {
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.files.arn]
  }
  statement {
    sid       = "ReadWrite"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.files.arn}/*"]
  }
  statement {
    sid       = "Key"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.storage.arn]
  }
}

resource "aws_iam_role" "ray" {
  name_prefix        = "${var.name}-ray-files-"
  assume_role_policy = data.aws_iam_policy_document.pod_identity_trust.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "ray_files" {
  name   = "files-bucket"
  role   = aws_iam_role.ray.id
  policy = data.aws_iam_policy_document.files.json
}

resource "aws_eks_pod_identity_association" "ray" {
  cluster_name    = var.cluster_name
  namespace       = var.namespace
  service_account = var.service_account
  role_arn        = aws_iam_role.ray.arn
  tags            = var.tags
}
