variable "kubeconfig_path" {
  type    = string
  default = "~/.kube/config"
}

variable "kube_context" {
  description = "The on-prem cluster's context"
  type        = string
  default     = null
}

variable "nats_config_dir" {
  type = string
}

variable "hub_url" {
  description = "tls://HOST:7422 of the cloud's Service nats-leafnodes"
  type        = string
}

variable "hub_ca_file" {
  type = string
}

variable "edge_nodes" {
  type    = list(string)
  default = []
}
