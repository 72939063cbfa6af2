variable "name" {
  type = string
}

variable "resource_group_name" {
  type = string
}

variable "location" {
  description = "The cluster's Azure region (the private endpoint lives there)"
  type        = string
}

variable "subscription_id" {
  description = "The Azure subscription Timescale is allowed to connect a private endpoint from"
  type        = string
}

variable "timescale_region" {
  description = "Timescale's Azure region beside the cluster, e.g. az-eastus for eastus"
  type        = string
}

variable "endpoints_subnet_id" {
  description = "Where the private endpoint gets its address (cloud-cluster's endpoints_subnet_id)"
  type        = string
}

variable "milli_cpu" {
  type    = number
  default = 2000
}

variable "memory_gb" {
  type    = number
  default = 8
}

variable "enable_ha_replica" {
  description = "A standby in another zone that takes over on failure"
  type        = bool
  default     = true
}
