terraform {
  required_version = ">= 1.5"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.20"
    }
    timescale = {
      source  = "timescale/timescale"
      version = "~> 2.8"
    }
  }
}
