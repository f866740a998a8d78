terraform {
  required_version = ">= 1.6"
  # No providers: locals in, the manifest out (like modules/sizing), so it renders and is checked
  # offline, and applying it needs no CRD at plan time.
}
