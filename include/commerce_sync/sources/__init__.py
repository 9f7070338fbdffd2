"""Sources: the ERP reader, feed transports and the XML/CSV feed parsers."""
