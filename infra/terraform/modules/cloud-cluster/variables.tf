variable "name" {
  description = "Prefix of every resource's name (letters and digits; the registry's name drops the dashes)"
  type        = string
}

variable "resource_group_name" {
  type = string
}

variable "location" {
  description = "Azure region, e.g. eastus (the Timescale service's region must match: az-eastus)"
  type        = string
}

variable "kubernetes_version" {
  description = "AKS minor version; the manifests are validated against 1.30"
  type        = string
  default     = "1.30"
}

variable "address_space" {
  type    = string
  default = "10.40.0.0/16"
}

variable "system_vm_size" {
  type    = string
  default = "Standard_D2s_v5"
}

variable "fleet_vm_size" {
  description = "The fleet's node pool (sentiment wants one core per replica)"
  type        = string
  default     = "Standard_D4s_v5"
}

variable "fleet_min_count" {
  description = "At least 3: the NATS hub runs one server per node"
  type        = number
  default     = 3
  validation {
    condition     = var.fleet_min_count >= 3
    error_message = "The NATS hub's three servers need three nodes."
  }
}

variable "fleet_max_count" {
  type    = number
  default = 6
}

variable "zones" {
  type    = list(string)
  default = ["1", "2", "3"]
}

variable "tags" {
  type    = map(string)
  default = {}
}
