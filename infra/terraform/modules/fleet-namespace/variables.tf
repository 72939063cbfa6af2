variable "namespace" {
  type    = string
  default = "tradefleet"
}

variable "users" {
  description = "The NATS users this site's pods connect as (its services, and admin where the streams are made): each gets Secret tradefleet-nats-USER"
  type        = list(string)
}

variable "nats_config_dir" {
  description = "What `tradefleet nats config --out DIR` wrote: nats-server.conf and SERVICE.nk per service"
  type        = string
}
