# Credentials are never in these files: Azure's come from `az login` (or ARM_* variables),
# Timescale's from TF_VAR_timescale_access_key / TF_VAR_timescale_secret_key.
variable "subscription_id" {
  type = string
}

variable "name" {
  type    = string
  default = "tradefleet"
}

variable "location" {
  type    = string
  default = "eastus"
}

variable "timescale_region" {
  description = "Timescale's region beside location (az-eastus for eastus)"
  type        = string
  default     = "az-eastus"
}

variable "timescale_project_id" {
  type = string
}

variable "timescale_access_key" {
  type = string
}

variable "timescale_secret_key" {
  type      = string
  sensitive = true
}
