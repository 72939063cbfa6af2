variable "name" {
  description = "Prefix of the storage account's name (letters and digits, globally unique with the suffix)"
  type        = string
}

variable "resource_group_name" {
  type = string
}

variable "location" {
  type = string
}

variable "backup_retention_days" {
  description = "Backups older than this are deleted"
  type        = number
  default     = 90
}

variable "tags" {
  type    = map(string)
  default = {}
}
