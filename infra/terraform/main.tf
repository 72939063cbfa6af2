# Cluster-side prerequisites of `kubectl apply -k deploy/k8s` on a hybrid cloud/on-prem cluster:
# the namespace and the database secret (TimescaleDB runs as a managed service or on-prem).
terraform {
  required_version = ">= 1.5"
  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.31"
    }
  }
}

variable "kubeconfig_path" {
  type    = string
  default = "~/.kube/config"
}

variable "kube_context" {
  type    = string
  default = null
}

variable "namespace" {
  type    = string
  default = "tradefleet"
}

variable "db_url" {
  description = "postgresql:// URL of the TimescaleDB that holds ticks, orders and fills"
  type        = string
  sensitive   = true
}

provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kube_context
}

resource "kubernetes_namespace_v1" "tradefleet" {
  metadata {
    name = var.namespace
  }
}

resource "kubernetes_secret_v1" "db" {
  metadata {
    name      = "tradefleet-db"
    namespace = kubernetes_namespace_v1.tradefleet.metadata[0].name
  }
  data = {
    TRADEFLEET_DB_URL = var.db_url
  }
}

output "namespace" {
  value = kubernetes_namespace_v1.tradefleet.metadata[0].name
}
