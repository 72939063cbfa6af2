variable "namespace" {
  type    = string
  default = "tradefleet"
}

variable "services" {
  description = "The services beside the broker (deploy/k8s/base/edge)"
  type        = list(string)
  default     = ["md-gateway", "risk", "execution"]
}

variable "nats_config_dir" {
  description = "What `tradefleet nats config --out DIR` wrote (the same run as the cloud's): nats-server.conf, SERVICE.nk, leaf.nk"
  type        = string
}

variable "hub_url" {
  description = "The cloud hub's leafnode address, e.g. tls://nats-leaf.example.com:7422 (Service nats-leafnodes)"
  type        = string
}

variable "hub_ca_file" {
  description = "PEM file of the CA that signed the hub's leafnode certificate"
  type        = string
}

variable "edge_nodes" {
  description = "Names of the nodes beside the broker: labelled tradefleet.io/pool=edge and tainted tradefleet.io/dedicated=edge:NoSchedule"
  type        = list(string)
  default     = []
}
