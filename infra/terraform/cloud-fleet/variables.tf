variable "kubeconfig_path" {
  type    = string
  default = "~/.kube/config"
}

variable "kube_context" {
  description = "The cloud cluster's context (az aks get-credentials)"
  type        = string
  default     = null
}

variable "namespace" {
  type    = string
  default = "tradefleet"
}

variable "services" {
  description = "The cloud side's services (deploy/k8s/base/core)"
  type        = list(string)
  default     = ["features", "fastlane", "sentiment", "policy", "qos", "tca", "recorder", "control", "alerts"]
}

variable "nats_config_dir" {
  description = "What `tradefleet nats config --out DIR` wrote (the same run as the on-prem site's)"
  type        = string
}

variable "db_url" {
  description = "TRADEFLEET_DB_URL: terraform -chdir=../cloud output -raw db_url"
  type        = string
  sensitive   = true
}

variable "leaf_tls_cert_file" {
  description = "PEM certificate (chain) of the hub's leafnode address, the one the on-prem leaf dials"
  type        = string
}

variable "leaf_tls_key_file" {
  type = string
}
