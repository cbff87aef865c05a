//! The load generator: closed- and open-loop HTTP load with HDR histograms (issue 5).
